"""vLLM sample logprobs in OpenAI's two shapes: chat `logprobs.content` entries and the legacy
completions `logprobs` object. Pure functions; only called when a request asked for logprobs.

vLLM gives, per generated token, a dict token id → Logprob(logprob, rank, decoded_token) holding
the sampled token plus the top-k alternatives (rank 1 is the most likely).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# JSON has no -inf; OpenAI-compatible servers (vLLM's own included) clamp to this floor.
LOGPROB_FLOOR = -9999.0


def _lp(value: float) -> float:
    return max(value, LOGPROB_FLOOR)


def _token(lp: Any) -> str:
    return lp.decoded_token or ""


def _top(step: Mapping[int, Any], k: int) -> list[Any]:
    ranked = sorted(step.values(), key=lambda lp: lp.rank)
    return [lp for lp in ranked if lp.rank is not None and lp.rank <= k][:k]


def chat_content(
    token_ids: Sequence[int], steps: Sequence[Mapping[int, Any]], top_k: int
) -> list[dict[str, Any]]:
    """`choices[i].logprobs.content` entries for these tokens (one per token)."""
    out = []
    for tid, step in zip(token_ids, steps, strict=True):
        chosen = step[tid]
        text = _token(chosen)
        out.append(
            {
                "token": text,
                "logprob": _lp(chosen.logprob),
                "bytes": list(text.encode()),
                "top_logprobs": [
                    {
                        "token": _token(alt),
                        "logprob": _lp(alt.logprob),
                        "bytes": list(_token(alt).encode()),
                    }
                    for alt in _top(step, top_k)
                ],
            }
        )
    return out


def completion_logprobs(
    token_ids: Sequence[int], steps: Sequence[Mapping[int, Any]], top_k: int, offset: int
) -> dict[str, Any]:
    """The completions `logprobs` object for these tokens; `offset` is the length of the text
    generated before them, so streamed pieces carry offsets into the whole completion."""
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []
    for tid, step in zip(token_ids, steps, strict=True):
        chosen = step[tid]
        text = _token(chosen)
        tokens.append(text)
        token_logprobs.append(_lp(chosen.logprob))
        # OpenAI: up to logprobs + 1 entries, since the sampled token is always included.
        top = {_token(alt): _lp(alt.logprob) for alt in _top(step, top_k)}
        top.setdefault(text, _lp(chosen.logprob))
        top_logprobs.append(top)
        text_offset.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    }


def merge_completion(acc: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """Append one piece's completions logprobs to what a non-streamed choice has so far."""
    if acc is None:
        return part
    for key, values in part.items():
        acc[key].extend(values)
    return acc
