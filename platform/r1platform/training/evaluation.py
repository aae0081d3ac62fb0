"""Held-out evaluation: greedy decoding on the eval rows, graded by the job's rewards."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from r1platform.training import rewards
from r1platform.training.batching import prompt_ids


def evaluate(
    engine: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    funcs: Sequence[rewards.RewardFunc],
    max_new_tokens: int,
) -> dict[str, float]:
    """Greedy decoding on the held-out rows through an engine handle (training/engines.py);
    `eval_accuracy` is the accuracy reward's mean."""
    prompts = [prompt_ids(tokenizer, r["prompt"]) for r in rows]
    groups = engine.generate(
        prompts, n=1, temperature=0.0, max_tokens=max_new_tokens, logprobs=False
    )
    texts = [g[0].text for g in groups]
    _, per_func = rewards.score(texts, list(rows), funcs)
    stats = rewards.reward_stats(per_func)
    out = {f"eval_{k.split('/')[1]}": stats[k] for k in stats if k.endswith("/mean")}
    acc_fn = rewards.RewardFunc("accuracy", rewards.accuracy_reward)
    acc = rewards.score(texts, list(rows), [acc_fn])[1]["accuracy"]
    vals = [v for v in acc if not math.isnan(v)]
    out["eval_accuracy"] = sum(vals) / len(vals) if vals else math.nan
    return out
