"""Token layout for the update: prompt + completion rows, and the logits that score them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from r1platform.training.rollout import Sample


def prompt_ids(tokenizer: Any, prompt: Any) -> list[int]:
    """Chat messages go through the model's template (which pre-fills `<think>`); a plain
    string prompt is used verbatim, as TRL does."""
    text = (
        prompt
        if isinstance(prompt, str)
        else tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass
class Batch:
    input_ids: torch.Tensor  # [N, L] prompt + completion, right-padded
    attention_mask: torch.Tensor  # [N, L]
    positions: torch.Tensor  # [N, T] index of the logit that predicts completion token t
    completion_ids: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T]
    old_logp: torch.Tensor  # [N, T] vLLM's sampling log-probs

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def build_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sample], pad_id: int
) -> Batch:
    """`prompts[i]` is the prompt of `completions[i]` (one entry per sample)."""
    n = len(completions)
    lengths = [len(p) + len(c.token_ids) for p, c in zip(prompts, completions, strict=True)]
    width = max(lengths)
    t_max = max(1, max(len(c.token_ids) for c in completions))
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    positions = torch.zeros((n, t_max), dtype=torch.long)
    comp = torch.full((n, t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t_max))
    old = torch.zeros((n, t_max))
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        seq = list(p) + list(c.token_ids)
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        t = len(c.token_ids)
        if t:
            positions[i, :t] = torch.arange(len(p) - 1, len(p) - 1 + t)
            comp[i, :t] = torch.tensor(c.token_ids)
            mask[i, :t] = 1
            old[i, :t] = torch.tensor(c.logprobs[:t] if c.logprobs else [0.0] * t)
    return Batch(input_ids, attention, positions, comp, mask, old)


def completion_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Logits [N, T, V] at the positions that predict each completion token."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    rows = torch.arange(logits.shape[0]).unsqueeze(1)
    return logits[rows, batch.positions]
