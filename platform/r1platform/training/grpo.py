"""GRPO math as pure torch functions: advantages, the clipped/KL loss, and token-level helpers.

Shapes: B prompts, G samples per prompt, N = B*G sequences, T completion tokens, V vocab.
`group_advantages` and `grpo_loss` are a fixed contract: the Ray Train loop and the benchmark
rely on their numbers. Variants register under a name (`ADV_ESTIMATORS`, `POLICY_LOSSES`) and
share the two pure pieces every loss needs: `kl_penalty` and `agg_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

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


# ---------------------------------------------------------------------------- registries
# As in verl's core_algos: a variant is one registered function plus a test, never an edit of
# the loss. Advantage estimators map rewards [B*G] to advantages [B*G]; policy losses map
# log-probs to a per-token policy term that `compute_loss` aggregates.

F = TypeVar("F", bound=Callable[..., Any])


def named_registry(
    kind: str,
) -> tuple[dict[str, F], Callable[[str], Callable[[F], F]], Callable[[str], F]]:
    """A name -> function table with its decorator and its lookup; an unknown or duplicate name
    is an error that names the kind and, for a lookup, every known name."""
    table: dict[str, F] = {}

    def register(name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered")
            table[name] = fn
            return fn

        return deco

    def get(name: str) -> F:
        if name not in table:
            raise ValueError(f"unknown {kind} {name!r}; known: {sorted(table)}")
        return table[name]

    return table, register, get


AdvantageFn = Callable[..., torch.Tensor]
ADV_ESTIMATORS, register_adv_est, get_adv_estimator = named_registry("advantage estimator")


@register_adv_est("grpo")
def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / (std + eps) per group, with the unbiased std."""
    grouped = _grouped(rewards, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    centered = centered / (grouped.std(dim=1, unbiased=True, keepdim=True) + eps)
    return centered.reshape(-1)


@register_adv_est("dr_grpo")
def dr_grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """r - mean per group (Dr. GRPO): no std division, which would weight a question by how
    consistently the policy answers it. `eps` is accepted for a uniform signature."""
    grouped = _grouped(rewards, group_size)
    return (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Per-sample advantages [B*G] from rewards ordered group by group.

    scale=True: (r - mean) / (std + eps) with the unbiased std (GRPO).
    scale=False: r - mean (Dr. GRPO, which drops the std's per-question difficulty bias).
    """
    return get_adv_estimator("grpo" if scale else "dr_grpo")(rewards, group_size, eps=eps)


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


@dataclass(frozen=True)
class PolicyTerm:
    """A policy loss's output, all [N, T]: the per-token loss, the importance ratio it used,
    and where the clip removed gradient on the low / high side (0/1)."""

    per_token: torch.Tensor
    ratio: torch.Tensor
    clipped_low: torch.Tensor
    clipped_high: torch.Tensor


PolicyLossFn = Callable[..., PolicyTerm]
POLICY_LOSSES, register_policy_loss, get_policy_loss = named_registry("policy loss")


def _clipped_objective(
    ratio: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float
) -> PolicyTerm:
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = -torch.min(ratio * adv, clipped * adv)
    with torch.no_grad():
        # The clip only removes gradient where it binds on the side the advantage pushes toward.
        low = ((ratio < 1.0 - clip_low) & (adv < 0)).to(ratio.dtype)
        high = ((ratio > 1.0 + clip_high) & (adv > 0)).to(ratio.dtype)
    return PolicyTerm(pg, ratio, low, high)


@register_policy_loss("grpo")
def token_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
) -> PolicyTerm:
    """PPO/GRPO clip on the per-token ratio exp(logp - old_logp)."""
    adv = advantages.to(logp.dtype).unsqueeze(1)
    return _clipped_objective(torch.exp(logp - old_logp), adv, clip_low, clip_high)


@register_policy_loss("gspo")
def sequence_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
) -> PolicyTerm:
    """GSPO: one length-normalised ratio per sequence, s = exp(mean_t(logp - old_logp)),
    clipped at the sequence level. Written per token as sg[s] * exp(logp - sg[logp]) (GSPO-token
    with equal token advantages): its value is s on every token and its gradient is s times
    the token's own log-prob gradient, so the loss's value and gradient are GSPO's."""
    m = mask.to(logp.dtype)
    log_s = ((logp - old_logp) * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    log_ratio = log_s.detach().unsqueeze(1) + logp - logp.detach()
    adv = advantages.to(logp.dtype).unsqueeze(1)
    return _clipped_objective(torch.exp(log_ratio), adv, clip_low, clip_high)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate [N, T] of KL(pi || ref) from samples of pi.

    k1: logp - ref (unbiased, high variance); k2: (logp - ref)^2 / 2;
    k3: exp(ref - logp) - (ref - logp) - 1 (unbiased, non-negative, low variance).
    """
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.exp(d) - d - 1.0
    raise ValueError(f"kl kind must be one of k1, k2, k3; got {kind!r}")


def agg_loss(
    per_token: torch.Tensor, mask: torch.Tensor, agg: LossAgg, norm: float | None = None
) -> torch.Tensor:
    """A scalar from a per-token loss [N, T].

    token-mean: every unmasked token weighs the same (DAPO).
    seq-mean-token-mean: mean over each sequence's tokens, then over sequences (GRPO paper).
    seq-mean-token-sum-norm: sum over tokens / (N * T), a constant normaliser (Dr. GRPO).
    `norm` replaces this batch's own divisor of the first and last (see rank_norm).
    """
    if agg not in LOSS_AGGS:
        raise ValueError(f"agg must be one of {LOSS_AGGS}, got {agg!r}")
    mask = mask.to(per_token.dtype)
    if agg == "token-mean":
        own = mask.sum() if norm is None else torch.tensor(norm, dtype=mask.dtype)
        return (per_token * mask).sum() / own.clamp_min(1.0)
    if agg == "seq-mean-token-mean":
        per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return per_seq.mean()
    n, t = per_token.shape
    return (per_token * mask).sum() / (n * t if norm is None else norm)


def rank_norm(agg: LossAgg, ranks: list[tuple[float, int, int]]) -> float | None:
    """The agg_loss divisor every data-parallel rank uses in place of its own batch's, so that
    averaging the ranks' gradients (DDP) gives one worker's gradient over all their batches.
    `ranks`: each rank's (unmasked tokens, rows, padded length). None: each batch's own, which
    is already exact for seq-mean-token-mean (ranks hold equal rows)."""
    world = len(ranks)
    if agg == "token-mean":
        return sum(r[0] for r in ranks) / world
    if agg == "seq-mean-token-sum-norm":
        return sum(r[1] for r in ranks) * max(r[2] for r in ranks) / world
    return None


def compute_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    policy_loss: str = "grpo",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    beta: float = 0.0,
    agg: LossAgg = "token-mean",
    norm: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The registered `policy_loss` plus beta * k3 KL, aggregated by `agg` (see agg_loss).

    Returns the scalar loss (differentiable through `logp`) and detached scalar metrics:
    clip_frac (tokens whose gradient the clip removed), clip_frac_low / clip_frac_high,
    kl (masked mean of k3; 0 when ref_logp is None), ratio_mean, pg_loss (token-mean policy term).
    """
    fn = get_policy_loss(policy_loss)
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
    term = fn(logp, old_logp, advantages, mask, clip_low=clip_low, clip_high=clip_high)
    kl = kl_penalty(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)
    per_token = term.per_token + beta * kl if beta != 0.0 else term.per_token
    loss = agg_loss(per_token, mask, agg, norm)

    with torch.no_grad():
        low, high = term.clipped_low, term.clipped_high
        metrics = {
            "clip_frac": masked_mean(low + high, mask),
            "clip_frac_low": masked_mean(low, mask),
            "clip_frac_high": masked_mean(high, mask),
            "kl": masked_mean(kl, mask),
            "ratio_mean": masked_mean(term.ratio, mask),
            "pg_loss": masked_mean(term.per_token, mask),
        }
    return loss, {k: v.detach() for k, v in metrics.items()}


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
    """The token-level clipped-ratio GRPO loss plus beta * k3 KL (`compute_loss` with
    policy_loss="grpo"); see `compute_loss` for the metrics it returns."""
    return compute_loss(
        logp, old_logp, ref_logp, advantages, mask,
        policy_loss="grpo", clip_low=clip_low, clip_high=clip_high, beta=beta, agg=agg,
    )  # fmt: skip


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
