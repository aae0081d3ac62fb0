"""The policy update for one rollout batch: advantages → loss → optimizer step(s).

A non-finite loss or gradient norm on any rank skips the whole update on every rank (the
decision is a collective), so the replicas never diverge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from r1platform.training import distributed as dist
from r1platform.training import grpo
from r1platform.training.batching import Batch, build_batch, completion_logits
from r1platform.training.sampling import RolloutBatch
from r1platform.training.settings import GRPOSettings
from r1platform.training.steptime import StepTimer


@dataclass
class UpdateResult:
    batch: Batch
    skipped: bool = False
    optimizer_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    # Trainer vs engine log-probs of the same tokens under the same weights: the weight-sync
    # health check (0 up to float noise).
    logprob_diff: float = math.nan


def policy_update(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    opt: torch.optim.Optimizer,
    rb: RolloutBatch,
    s: GRPOSettings,
    *,
    pad_id: int,
    poison: bool,
    world: int,
    timer: StepTimer | None = None,
) -> UpdateResult:
    """`num_iterations` optimizer steps on `rb`; `poison` multiplies the loss by NaN (tests).

    The old policy's log-probs are the engine's sampling log-probs: no forward pass of the old
    policy is ever run (with num_iterations == 1 the ratio is 1 up to the sync's float noise,
    which `logprob_diff` reports)."""
    timer = timer or StepTimer()
    with timer.phase("data"):
        adv = grpo.group_advantages(
            torch.tensor(rb.total, dtype=torch.float32), s.group_size, scale=s.scale_rewards
        )
        batch = build_batch(rb.flat_prompts, rb.samples, pad_id)
    out = UpdateResult(batch)
    # Ranks hold different completion tokens and lengths, and DDP averages their gradients:
    # one divisor from all ranks' shapes keeps the loss the one a single worker would compute.
    shape = (float(batch.mask.sum()), *batch.mask.shape)
    norm = grpo.rank_norm(s.loss_agg, dist.allgather(shape, world))
    ref_logp = None
    if ref_model is not None:
        with timer.phase("logprob"), torch.no_grad():
            ref_logits = completion_logits(ref_model, batch)
            ref_logp = grpo.token_logprobs(ref_logits, batch.completion_ids, s.temperature)
    for it in range(s.num_iterations):
        with timer.phase("backward"):
            logits = completion_logits(model, batch)
            logp = grpo.token_logprobs(logits, batch.completion_ids, s.temperature)
            if it == 0:
                diff = (logp.detach() - batch.old_logp).abs()
                out.logprob_diff = float(grpo.masked_mean(diff, batch.mask))
            loss, lm = grpo.compute_loss(
                logp, batch.old_logp, ref_logp, adv, batch.mask,
                policy_loss=s.policy_loss, clip_low=s.clip_low, clip_high=s.clip_high,
                beta=s.beta, agg=s.loss_agg, norm=norm,
            )  # fmt: skip
            if poison:
                loss = loss * float("nan")
            with torch.no_grad():
                ent = grpo.masked_mean(grpo.entropy_from_logits(logits), batch.mask)
            opt.zero_grad(set_to_none=True)
            finite = dist.all_ranks_true(grpo.is_finite_loss(loss), world)
            if finite:
                loss.backward()
        if not finite:
            out.skipped = True
            break
        with timer.phase("optimizer"):
            norm = grpo.clip_grad_norm(model.parameters(), s.max_grad_norm)
            finite = dist.all_ranks_true(math.isfinite(norm), world)
            if finite:
                opt.step()
        if not finite:
            opt.zero_grad(set_to_none=True)
            out.skipped = True
            break
        out.optimizer_steps += 1
        out.metrics = {k: float(v) for k, v in lm.items()}
        out.metrics.update(loss=float(loss.detach()), entropy=float(ent), grad_norm=norm)
    opt.zero_grad(set_to_none=True)
    return out
