"""GRPO math as pure torch functions: advantages, the clipped/KL loss, and token-level helpers.

Shapes: B prompts, G samples per prompt, N = B*G sequences, T completion tokens, V vocab.
`group_advantages` and `grpo_loss` implement the contract in DESIGN.md exactly; other parts of
the platform (the Ray Train loop, the benchmark) rely on their numbers, so change them only with
that document.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch

LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
LOSS_AGGS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 2:
        # One sample per prompt has no group baseline and an undefined unbiased std.
        raise ValueError(f"group_size must be >= 2, got {group_size}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}")
    if rewards.numel() % group_size:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, not a multiple of group_size {group_size}"
        )
    # Integer rewards need a float dtype; float64 stays float64 for exact reference checks.
    return rewards.view(-1, group_size).to(torch.promote_types(rewards.dtype, torch.float32))


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Per-sample advantages [B*G] from rewards ordered group by group.

    scale=True: (r - mean) / (std + eps) with the unbiased std (GRPO).
    scale=False: r - mean (Dr. GRPO, which drops the std's per-question difficulty bias).
    """
    grouped = _grouped(rewards, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centered = centered / (grouped.std(dim=1, unbiased=True, keepdim=True) + eps)
    return centered.reshape(-1)


def filter_tied_groups(rewards: torch.Tensor, group_size: int, atol: float = 0.0) -> torch.Tensor:
    """Keep mask [B] (bool): True for groups whose rewards are not all tied (DAPO dynamic sampling).

    A tied group has zero advantage for every sample, so it only dilutes the batch. `atol` lets
    rewards that differ by float noise count as tied.
    """
    grouped = _grouped(rewards, group_size)
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values
    return spread > atol


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over positions where mask is 1; 0 when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    beta: float = 0.0,
    agg: LossAgg = "token-mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-ratio policy loss plus beta * k3 KL, aggregated per DESIGN.md.

    Returns the scalar loss (differentiable through `logp`) and detached scalar metrics:
    clip_frac (tokens whose gradient the clip removed), clip_frac_low / clip_frac_high,
    kl (masked mean of k3; 0 when ref_logp is None), ratio_mean, pg_loss (token-mean policy term).
    """
    if agg not in LOSS_AGGS:
        raise ValueError(f"agg must be one of {LOSS_AGGS}, got {agg!r}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError("ref_logp is required when beta != 0")
    if logp.shape != old_logp.shape or logp.shape != mask.shape or logp.dim() != 2:
        raise ValueError(
            f"logp, old_logp and mask must share shape [N, T]; got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [N]={logp.shape[0]}, got {tuple(advantages.shape)}")

    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = -torch.min(ratio * adv, clipped * adv)

    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
    else:
        kl = torch.zeros_like(logp)
    per_token = pg + beta * kl if beta != 0.0 else pg

    n, t = logp.shape
    if agg == "token-mean":
        loss = (per_token * mask).sum() / mask.sum().clamp_min(1.0)
    elif agg == "seq-mean-token-mean":
        per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        loss = per_seq.mean()
    else:
        loss = (per_token * mask).sum() / (n * t)

    with torch.no_grad():
        # The clip only removes gradient where it binds on the side the advantage pushes toward.
        low = ((ratio < 1.0 - clip_low) & (adv < 0)).to(logp.dtype)
        high = ((ratio > 1.0 + clip_high) & (adv > 0)).to(logp.dtype)
        metrics = {
            "clip_frac": masked_mean(low + high, mask),
            "clip_frac_low": masked_mean(low, mask),
            "clip_frac_high": masked_mean(high, mask),
            "kl": masked_mean(kl, mask),
            "ratio_mean": masked_mean(ratio, mask),
            "pg_loss": masked_mean(pg, mask),
        }
    return loss, {k: v.detach() for k, v in metrics.items()}


def token_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Log-prob [N, T] of each `token_ids` entry under `logits` [N, T, V] (already aligned).

    Computed as logit - logsumexp in at least float32, so bf16 logits do not lose the small
    differences that the ratio exp(logp - old_logp) depends on, and without materialising a
    full log_softmax [N, T, V].
    """
    if logits.shape[:-1] != token_ids.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and token_ids {tuple(token_ids.shape)} misaligned"
        )
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim: logsumexp(z) - sum(p * z)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def is_finite_loss(loss: torch.Tensor | float) -> bool:
    """True when the loss is a finite number; the trainer skips the step otherwise."""
    if isinstance(loss, torch.Tensor):
        return bool(torch.isfinite(loss.detach()).all())
    return math.isfinite(loss)


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip gradients in place to `max_norm` (None or <= 0: no clipping); return the pre-clip norm.

    Non-finite norms are returned, not raised, so the caller can skip the step like a bad loss.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None or max_norm <= 0:
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params])
        )
        return float(norm)
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm, error_if_nonfinite=False))
