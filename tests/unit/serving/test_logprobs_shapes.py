"""vLLM sample logprobs rendered in OpenAI's chat and completions shapes."""

from dataclasses import dataclass

from r1platform.serving.logprobs import (
    LOGPROB_FLOOR,
    chat_content,
    completion_logprobs,
    merge_completion,
)


@dataclass
class Lp:  # the fields of vllm.logprobs.Logprob that the formatters read
    logprob: float
    rank: int | None
    decoded_token: str | None


# Two generated tokens: "a" (the most likely) then "b" (sampled at rank 3, outside the top 2).
IDS = [10, 11]
STEPS = [
    {10: Lp(-0.1, 1, "a"), 12: Lp(-2.5, 2, "c")},
    {11: Lp(-3.0, 3, "b"), 13: Lp(-0.2, 1, "d"), 14: Lp(float("-inf"), 2, "é")},
]


def test_chat_entries_have_token_logprob_bytes_and_ranked_alternatives():
    out = chat_content(IDS, STEPS, 2)
    assert [e["token"] for e in out] == ["a", "b"]
    assert out[0]["logprob"] == -0.1 and out[0]["bytes"] == [97]
    assert [t["token"] for t in out[0]["top_logprobs"]] == ["a", "c"]
    assert [t["token"] for t in out[1]["top_logprobs"]] == ["d", "é"]
    assert out[1]["top_logprobs"][1] == {
        "token": "é",
        "logprob": LOGPROB_FLOOR,
        "bytes": [195, 169],
    }
    assert all(e["top_logprobs"] == [] for e in chat_content(IDS, STEPS, 0))


def test_completion_object_has_parallel_lists_and_running_offsets():
    out = completion_logprobs(IDS, STEPS, 1, offset=5)
    assert out["tokens"] == ["a", "b"]
    assert out["token_logprobs"] == [-0.1, -3.0]
    assert out["text_offset"] == [5, 6]
    # top-1 plus the sampled token when it is not among them (OpenAI: up to logprobs + 1)
    assert out["top_logprobs"] == [{"a": -0.1}, {"d": -0.2, "b": -3.0}]


def test_non_streamed_pieces_merge_in_order():
    whole = merge_completion(None, completion_logprobs(IDS[:1], STEPS[:1], 1, 0))
    whole = merge_completion(whole, completion_logprobs(IDS[1:], STEPS[1:], 1, 1))
    assert whole == completion_logprobs(IDS, STEPS, 1, 0)
