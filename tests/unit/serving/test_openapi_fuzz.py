"""The ingress's request parsing, fuzzed offline from the OpenAPI document it publishes.

Schemathesis generates bodies from the published request schemas (valid ones, and ones that
break every constraint: wrong types, huge and negative numbers, unicode); every body must be
either accepted or refused with a ClientError, never any other exception (a 500 live). The
live twin of this test, against real engines, is tests/integration/test_serving_proof.py.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from r1platform.serving.deployments import api
from r1platform.serving.protocol import (
    REQUEST_MODELS,
    ChatRequest,
    ClientError,
    CompletionRequest,
    parse_request,
)
from schemathesis.generation import GenerationMode

MODELS = {"/v1/chat/completions": ChatRequest, "/v1/completions": CompletionRequest}
SCHEMA = schemathesis.openapi.from_dict(api.openapi())


def _operation(path: str):
    for result in SCHEMA.get_all_operations():
        op = result.ok()
        if op.path == path and op.method.upper() == "POST":
            return op
    raise AssertionError(f"{path} is not in the OpenAPI document")


def _parse_or_refuse(model_cls, body) -> str:
    try:
        parse_request(model_cls, body, max_n=16)
    except ClientError as err:
        assert 400 <= err.status < 500 and err.message
        # The error body must serialise, whatever text the client sent.
        json.dumps(err.body()).encode("ascii")
        return "refused"
    return "accepted"


@pytest.mark.parametrize("path", sorted(MODELS))
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_bodies_are_accepted_or_refused_cleanly(path, mode):
    outcomes: list[str] = []

    @given(_operation(path).as_strategy(generation_mode=mode))
    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        body = case.body
        if isinstance(body, bytes | bytearray):  # a raw body: what the ingress json-decodes
            try:
                body = json.loads(body)
            except (ValueError, RecursionError):
                return
        outcomes.append(_parse_or_refuse(MODELS[path], body))

    run()
    assert outcomes, "the schema produced no body"
    if mode is GenerationMode.POSITIVE:
        assert "accepted" in outcomes, "valid bodies per the schema must parse"
    else:
        assert "refused" in outcomes


def test_published_schemas_are_the_protocol_models():
    doc = api.openapi()
    for model in REQUEST_MODELS:
        assert doc["components"]["schemas"][model.__name__]["properties"].keys() == (
            model.model_json_schema()["properties"].keys()
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.sampled_from(REQUEST_MODELS),
    st.fixed_dictionaries(
        {},
        optional={
            "model": json_values,
            "messages": json_values,
            "prompt": json_values,
            "seed": st.integers(min_value=-(2**70), max_value=2**70),
            "max_tokens": st.integers(min_value=-(2**70), max_value=2**70),
            "logit_bias": st.dictionaries(st.text(), json_values, max_size=3),
            "stop_token_ids": st.lists(st.integers(min_value=-(2**70), max_value=2**70)),
            "temperature": st.floats(allow_nan=True, allow_infinity=True),
            "n": json_values,
        },
    ),
)
def test_typed_mutations_never_escape_as_other_errors(model_cls, body):
    _parse_or_refuse(model_cls, body)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "prompt": "x", "logit_bias": {"\u00b2": 1}}, "logit_bias"),
        ({"model": "m", "prompt": "x", "logit_bias": {"9" * 30: 1}}, "logit_bias"),
        ({"model": "m", "prompt": "x", "seed": 2**64}, "seed"),
        ({"model": "m", "prompt": "x", "stop_token_ids": [2**40]}, "stop_token_ids.0"),
        ({"model": "m", "prompt": ""}, "prompt"),
    ],
)
def test_values_the_engine_cannot_take_are_400s_naming_the_field(body, param):
    with pytest.raises(ClientError) as err:
        parse_request(CompletionRequest, body)
    assert err.value.status == 400 and err.value.param == param


def test_deeply_nested_body_is_a_400():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "metadata": {}}
    inner: dict = {}
    for _ in range(100_000):
        inner = {"a": inner}
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": inner}}
    with pytest.raises(ClientError) as err:
        parse_request(ChatRequest, body)
    assert err.value.param.startswith("response_format") and "schema" in err.value.message
