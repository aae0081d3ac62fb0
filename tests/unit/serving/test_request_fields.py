"""Which OpenAI request fields are honoured, ignored, or refused, and how they reach vLLM."""

import pytest
from r1platform.serving.protocol import (
    IGNORED_FIELDS,
    ChatRequest,
    ClientError,
    CompletionRequest,
    parse_request,
)

MSG = [{"role": "user", "content": "hi"}]


def chat(**kw):
    return parse_request(ChatRequest, {"model": "m", "messages": MSG, **kw}, 16)


def test_passthrough_fields_reach_vllm_sampling():
    req = chat(
        presence_penalty=0.5,
        frequency_penalty=-1.0,
        stop_token_ids=[2, 7],
        logit_bias={"2": -100, "11": 5.5},
        logprobs=True,
        top_logprobs=3,
    )
    assert req.sampling(10) == {
        "n": 1,
        "max_tokens": 10,
        "presence_penalty": 0.5,
        "frequency_penalty": -1.0,
        "stop_token_ids": [2, 7],
        "logit_bias": {2: -100.0, 11: 5.5},
        "logprobs": 3,
    }
    assert chat(logprobs=True).sampling(1)["logprobs"] == 0, "the sampled token's logprob only"
    assert "logprobs" not in chat(logprobs=False).sampling(1)


def test_completion_logprobs_is_the_number_of_alternatives():
    req = parse_request(CompletionRequest, {"model": "m", "prompt": "1+1", "logprobs": 2}, 16)
    assert req.sampling(4)["logprobs"] == 2 and req.structured_output() is None


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"json_object": True}),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
            {"json": {"type": "object"}},
        ),
    ],
)
def test_response_format_maps_to_structured_outputs(fmt, expected):
    assert chat(response_format=fmt).structured_output() == expected


def test_ignored_fields_are_accepted_and_change_nothing():
    values = {
        "user": "u-1",
        "metadata": {"k": "v"},
        "store": False,
        "service_tier": "auto",
        "parallel_tool_calls": True,
        "prompt_cache_key": "p",
        "safety_identifier": "s",
    }
    assert set(values) == set(IGNORED_FIELDS)
    assert chat(**values).sampling(5) == chat().sampling(5)
    req = chat(stream=True, stream_options={"include_usage": True, "include_obfuscation": False})
    assert req.include_usage


@pytest.mark.parametrize("field", ["tools", "tool_choice", "audio", "modalities", "best_of"])
def test_unsupported_fields_get_a_400_that_names_them(field):
    with pytest.raises(ClientError) as e:
        chat(**{field: ["x"]})
    assert e.value.status == 400 and e.value.param == field and field in e.value.message


def test_unsupported_field_set_to_null_counts_as_not_sent():
    payload = {"model": "m", "messages": MSG, "tools": None, "audio": None}
    parse_request(ChatRequest, payload, 16)
    assert "tools" not in payload and "audio" not in payload, "the engine must see what we checked"


def test_chat_only_fields_are_refused_on_completions():
    for field, value in (("response_format", {"type": "json_object"}), ("top_logprobs", 2)):
        with pytest.raises(ClientError) as e:
            parse_request(CompletionRequest, {"model": "m", "prompt": "x", field: value}, 16)
        assert e.value.param == field


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"logit_bias": {"a": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias.5"),
        ({"stop_token_ids": [-1]}, "stop_token_ids.0"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}}, None),
        ({"stream_options": {"include_usage": True, "chunk_size": 3}}, "stream_options.chunk_size"),
    ],
)
def test_bad_passthrough_values_name_the_parameter(extra, param):
    with pytest.raises(ClientError) as e:
        chat(**extra)
    assert e.value.status == 400
    if param is not None:
        assert e.value.param == param
    else:
        assert e.value.param.startswith("response_format")


@pytest.mark.parametrize("prompt", ["", [""], ["ok", ""], []])
def test_empty_completion_prompt_is_a_400(prompt):
    with pytest.raises(ClientError) as e:
        parse_request(CompletionRequest, {"model": "m", "prompt": prompt}, 16)
    assert e.value.status == 400 and e.value.param.startswith("prompt")
