"""The request deadline, stream helpers, and the request bodies in the OpenAPI document."""

import asyncio

import pytest
from r1platform.serving.streams import Deadline, has_text


class SlowStream:
    def __init__(self, delays):
        self.delays = list(delays)
        self.cancelled_reads = 0

    async def __anext__(self):
        if not self.delays:
            raise StopAsyncIteration
        try:
            await asyncio.sleep(self.delays.pop(0))
        except asyncio.CancelledError:
            self.cancelled_reads += 1
            raise
        return {"choices": []}


async def test_deadline_interrupts_the_read_in_flight():
    stream = SlowStream([0.0, 10.0])
    deadline = Deadline(0.05)
    assert await deadline.read(stream) == {"choices": []}
    t = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await deadline.read(stream)
    assert asyncio.get_running_loop().time() - t < 1.0 and stream.cancelled_reads == 1
    assert asyncio.current_task().cancelling() == 0, "the deadline's cancel must not leak"
    with pytest.raises(TimeoutError):  # expired: no read is even started
        await deadline.read(stream)


async def test_deadline_fired_between_reads_stops_the_next_one():
    deadline = Deadline(0.01)
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await deadline.read(SlowStream([0.0]))


async def test_a_cancelled_deadline_never_fires_and_the_end_passes_through():
    stream = SlowStream([0.02, 0.02])
    deadline = Deadline(0.01)
    deadline.cancel()
    await deadline.read(stream)
    await deadline.read(stream)
    with pytest.raises(StopAsyncIteration):
        await deadline.read(stream)


async def test_someone_elses_cancel_stays_a_cancel():
    deadline = Deadline(30)
    task = asyncio.ensure_future(deadline.read(SlowStream([10.0])))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.cancel()


def test_has_text_looks_at_content_reasoning_and_completion_text():
    assert not has_text({"choices": [{"delta": {"role": "assistant", "content": ""}}]})
    assert has_text({"choices": [{"delta": {"reasoning_content": "x"}}]})
    assert has_text({"choices": [{"text": "7"}]})
    assert not has_text({"choices": []})


def _resolve(doc, ref):
    assert ref.startswith("#/")
    node = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_openapi_publishes_the_request_bodies():
    from r1platform.serving.deployments import api

    api.openapi_schema = None
    doc = api.openapi()
    for path, fields in (
        ("/v1/chat/completions", {"messages", "logprobs", "top_logprobs", "response_format"}),
        ("/v1/completions", {"prompt", "logprobs", "logit_bias", "stop_token_ids"}),
    ):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        schema = _resolve(doc, body["content"]["application/json"]["schema"]["$ref"])
        assert fields <= set(schema["properties"])
        assert "model" in schema["required"]
        assert schema["additionalProperties"] is False, "unknown fields are refused"
    for ref in _refs(doc):
        _resolve(doc, ref)  # every reference points into the document
