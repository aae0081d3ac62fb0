"""Rollout for one step: prompts → G samples each → rewards, with DAPO dynamic sampling.

Dynamic sampling drops groups whose rewards all tie (zero advantage, no gradient) and refills
them from fresh draws, keeping the batch size. Every rank draws each refill round so the shared
data cursor stays in step, even a rank with nothing to replace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from r1platform.training import distributed as dist
from r1platform.training import grpo, rewards
from r1platform.training.rollout import Sample
from r1platform.training.settings import GRPOSettings
from r1platform.training.steptime import StepTimer


@dataclass
class RolloutBatch:
    """One rank's sampled groups, group by group: `groups[i]` holds the G samples of
    `rows[i]`, whose token ids are `prompts[i]`; `total` and `per_func[name]` are the rewards
    per sample ([B*G]); `keep[i]` is False for a group whose rewards all tie."""

    group_size: int
    rows: list[dict[str, Any]]
    prompts: list[list[int]]
    groups: list[list[Sample]]
    total: list[float]
    per_func: dict[str, list[float]]
    keep: list[bool] = field(default_factory=list)
    refill_rounds: int = 0

    @property
    def samples(self) -> list[Sample]:
        return [c for g in self.groups for c in g]

    @property
    def flat_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows for _ in range(self.group_size)]

    @property
    def flat_prompts(self) -> list[list[int]]:
        return [p for p in self.prompts for _ in range(self.group_size)]

    @property
    def gen_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.samples)

    def with_keep(self) -> RolloutBatch:
        keep = grpo.filter_tied_groups(torch.tensor(self.total), self.group_size).tolist()
        return replace(self, keep=keep)


def refill(batch: RolloutBatch, extra: RolloutBatch) -> RolloutBatch:
    """Replace tied groups of `batch` with informative groups of `extra`, in order, keeping
    the batch size; groups that cannot be replaced stay (they add zero gradient)."""
    g = batch.group_size
    groups, rows, prompts = list(batch.groups), list(batch.rows), list(batch.prompts)
    total, keep = list(batch.total), list(batch.keep)
    per_func = {name: list(v) for name, v in batch.per_func.items()}
    donors = [j for j, k in enumerate(extra.keep) if k]
    for i, k in enumerate(batch.keep):
        if k or not donors:
            continue
        j = donors.pop(0)
        groups[i], rows[i], prompts[i] = extra.groups[j], extra.rows[j], extra.prompts[j]
        total[i * g : (i + 1) * g] = extra.total[j * g : (j + 1) * g]
        for name in per_func:
            per_func[name][i * g : (i + 1) * g] = extra.per_func[name][j * g : (j + 1) * g]
        keep[i] = True
    return replace(batch, groups=groups, rows=rows, prompts=prompts, total=total,
                   per_func=per_func, keep=keep)  # fmt: skip


def sample_groups(
    engine: Any,
    encode: Callable[[dict[str, Any]], list[int]],
    rows: list[dict[str, Any]],
    seeds: list[int],
    funcs: Sequence[rewards.RewardFunc],
    s: GRPOSettings,
    timer: StepTimer,
) -> RolloutBatch:
    """G samples per row from the engine handle (training/engines.py), scored by the reward
    functions; `encode(row)` gives the row's prompt token ids."""
    with timer.phase("data"):
        prompts = [encode(r) for r in rows]
    with timer.phase("rollout"):
        groups = engine.generate(
            prompts, n=s.group_size, temperature=s.temperature, max_tokens=s.max_new_tokens,
            seeds=seeds,
        )  # fmt: skip
    batch = RolloutBatch(s.group_size, rows, prompts, groups, [], {})
    with timer.phase("reward"):
        total, per_func = rewards.score([c.text for c in batch.samples], batch.flat_rows, funcs)
    return replace(batch, total=total, per_func=per_func)


def rollout(
    engine: Any,
    encode: Callable[[dict[str, Any]], list[int]],
    rows: list[dict[str, Any]],
    draw: Callable[[], list[int]],
    funcs: Sequence[rewards.RewardFunc],
    s: GRPOSettings,
    *,
    step: int,
    world: int,
    timer: StepTimer,
) -> RolloutBatch:
    """This rank's batch for `step`; with dynamic sampling, tied groups refilled (collective)."""
    picked = [rows[i] for i in draw()]
    seeds = [hash((s.seed, step, r["_idx"])) % (2**31) for r in picked]
    batch = sample_groups(engine, encode, picked, seeds, funcs, s, timer)
    if not s.dynamic_sampling:
        return batch
    batch = batch.with_keep()
    refills = 0
    while refills < s.max_refill_rounds and not dist.all_ranks_true(all(batch.keep), world):
        refills += 1
        extra_rows = [rows[i] for i in draw()]
        if all(batch.keep):
            continue
        seeds = [hash((s.seed, step, refills, r["_idx"])) % (2**31) for r in extra_rows]
        extra = sample_groups(engine, encode, extra_rows, seeds, funcs, s, timer).with_keep()
        batch = refill(batch, extra)
    return replace(batch, refill_rounds=refills)
