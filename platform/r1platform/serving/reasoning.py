"""Split R1 output into reasoning and answer text, incrementally and in O(1) per delta.

vLLM's deepseek_r1 parser decides the semantics (reasoning until `</think>`, a leading
`<think>` dropped, no `</think>` means everything is reasoning); we take its tag strings and
token ids but keep our own state instead of rescanning all previous token ids every delta.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ThinkTags:
    start: str = "<think>"
    end: str = "</think>"
    start_id: int | None = None
    end_id: int | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, parser_name: str = "deepseek_r1") -> ThinkTags:
        from vllm.reasoning import ReasoningParserManager

        parser = ReasoningParserManager.get_reasoning_parser(parser_name)(tokenizer)
        return cls(parser.start_token, parser.end_token, parser.start_token_id, parser.end_token_id)


@dataclass
class ReasoningSplitter:
    """Per-choice state. feed() returns (reasoning_delta, content_delta, reasoning_token_count)."""

    tags: ThinkTags = field(default_factory=ThinkTags)
    in_reasoning: bool = True
    _pending: str = ""

    def feed(self, text: str, token_ids: list[int] | tuple[int, ...] = ()) -> tuple[str, str, int]:
        reasoning_tokens = self._count(token_ids)
        buf = self._pending + text
        self._pending = ""
        reasoning, content = [], []
        while buf:
            if self.in_reasoning:
                buf = buf.removeprefix(self.tags.start)
                idx = buf.find(self.tags.end)
                if idx < 0:
                    keep = _partial_suffix(buf, self.tags.end)
                    reasoning.append(buf[: len(buf) - keep])
                    self._pending = buf[len(buf) - keep :]
                    break
                reasoning.append(buf[:idx])
                buf = buf[idx + len(self.tags.end) :]
                self.in_reasoning = False
            else:
                # content must never carry think tags, even ones the model repeats
                cleaned = buf.replace(self.tags.start, "").replace(self.tags.end, "")
                keep = max(
                    _partial_suffix(cleaned, self.tags.end),
                    _partial_suffix(cleaned, self.tags.start),
                )
                content.append(cleaned[: len(cleaned) - keep])
                self._pending = cleaned[len(cleaned) - keep :]
                break
        return "".join(reasoning), "".join(content), reasoning_tokens

    def flush(self) -> tuple[str, str]:
        rest, self._pending = self._pending, ""
        return (rest, "") if self.in_reasoning else ("", rest)

    def _count(self, token_ids: list[int] | tuple[int, ...]) -> int:
        if not self.in_reasoning or not token_ids:
            return 0
        n = 0
        for t in token_ids:
            if t == self.tags.end_id:
                break
            if t != self.tags.start_id:
                n += 1
        return n


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag (a tag split
    across deltas must be held back, not leaked)."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def split_full(text: str, tags: ThinkTags | None = None) -> tuple[str | None, str | None]:
    s = ReasoningSplitter(tags or ThinkTags())
    r, c, _ = s.feed(text)
    fr, fc = s.flush()
    reasoning, content = r + fr, c + fc
    return (reasoning or None), (content or None)
