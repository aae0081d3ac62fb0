"""GRPO math against values computed by hand (see each comment), not against the code itself."""

import math

import pytest
import torch
from r1platform.training.grpo import (
    clip_grad_norm,
    entropy_from_logits,
    filter_tied_groups,
    group_advantages,
    grpo_loss,
    is_finite_loss,
    masked_mean,
    token_logprobs,
)

EPS = 1e-6


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------- advantages


def test_group_advantages_scaled_uses_unbiased_std():
    # Group [1,0,0,0]: mean .25, unbiased var (.75^2 + 3*.25^2)/3 = .25 -> std .5.
    # Group [2,2,2,2]: all tied -> 0 / (0 + eps) = 0.
    adv = group_advantages(t([1, 0, 0, 0, 2, 2, 2, 2]), 4)
    s = 0.5 + EPS
    expected = [0.75 / s, -0.25 / s, -0.25 / s, -0.25 / s, 0, 0, 0, 0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-9)


def test_group_advantages_g2_distinguishes_unbiased_from_population_std():
    # [1,3]: mean 2; unbiased std sqrt((1+1)/1) = sqrt(2) (population std would be 1).
    adv = group_advantages(t([1.0, 3.0]), 2)
    s = math.sqrt(2) + EPS
    assert adv.tolist() == pytest.approx([-1 / s, 1 / s], abs=1e-9)


def test_group_advantages_unscaled_is_dr_grpo():
    adv = group_advantages(t([1, 0, 0, 0, 3, 1, 2, 2]), 4, scale=False)
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 1, -1, 0, 0])


def test_group_advantages_custom_eps():
    # [0, 2]: std sqrt(2); eps 1 -> denominator sqrt(2) + 1.
    adv = group_advantages(t([0.0, 2.0]), 2, eps=1.0)
    assert adv.tolist() == pytest.approx([-1 / (math.sqrt(2) + 1), 1 / (math.sqrt(2) + 1)])


@pytest.mark.parametrize(
    ("rewards", "g", "msg"),
    [([1.0, 2.0, 3.0], 2, "multiple"), ([1.0, 2.0], 1, ">= 2"), ([[1.0, 2.0]], 2, "1-D")],
)
def test_group_advantages_rejects_bad_shapes(rewards, g, msg):
    with pytest.raises(ValueError, match=msg):
        group_advantages(t(rewards), g)


# ---------------------------------------------------------------- loss
# Shared case: old_logp = log .5, logp = log(.5 * r), so ratio = r exactly.
# r = [[1.5, 0.9], [0.5, 1.1]], A = [2, -1], clip 0.2/0.2:
#   (0,0) r=1.5, A=2 : min(3.0, 1.2*2=2.4) = 2.4   -> pg -2.4 (high clip binds)
#   (0,1) r=0.9, A=2 : min(1.8, 0.9*2)     = 1.8   -> pg -1.8
#   (1,0) r=0.5, A=-1: min(-0.5, 0.8*-1)   = -0.8  -> pg  0.8 (low clip binds)
#   (1,1) r=1.1, A=-1: min(-1.1, 1.1*-1)   = -1.1  -> pg  1.1
RATIOS = [[1.5, 0.9], [0.5, 1.1]]
ADV = [2.0, -1.0]
MASK = [[1.0, 1.0], [1.0, 0.0]]


def case(ratios=RATIOS):
    old = torch.full((2, 2), math.log(0.5), dtype=torch.float64)
    logp = (old + torch.log(t(ratios))).requires_grad_(True)
    return logp, old


def test_token_mean():
    logp, old = case()
    loss, m = grpo_loss(logp, old, None, t(ADV), t(MASK))
    assert loss.item() == pytest.approx((-2.4 - 1.8 + 0.8) / 3)
    assert m["clip_frac"].item() == pytest.approx(2 / 3)
    assert m["clip_frac_high"].item() == pytest.approx(1 / 3)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 3)
    assert m["ratio_mean"].item() == pytest.approx((1.5 + 0.9 + 0.5) / 3)
    assert m["kl"].item() == 0.0


def test_seq_mean_token_mean():
    logp, old = case()
    loss, _ = grpo_loss(logp, old, None, t(ADV), t(MASK), agg="seq-mean-token-mean")
    # seq0: (-2.4 - 1.8) / 2 = -2.1; seq1: 0.8 / 1; mean = -0.65
    assert loss.item() == pytest.approx(-0.65)


def test_seq_mean_token_sum_norm():
    logp, old = case()
    loss, _ = grpo_loss(logp, old, None, t(ADV), t(MASK), agg="seq-mean-token-sum-norm")
    # sum(l*mask) / (N*T) = -3.4 / 4
    assert loss.item() == pytest.approx(-0.85)


def test_full_mask_includes_last_token():
    logp, old = case()
    loss, m = grpo_loss(logp, old, None, t(ADV), torch.ones(2, 2, dtype=torch.float64))
    assert loss.item() == pytest.approx((-2.4 - 1.8 + 0.8 + 1.1) / 4)
    assert m["clip_frac"].item() == pytest.approx(2 / 4)


def test_clip_higher_is_separate_from_clip_low():
    # clip_high .28: (0,0) becomes min(3.0, 1.28*2) = 2.56; r=0.5 still low-clipped at 0.8.
    logp, old = case()
    loss, _ = grpo_loss(logp, old, None, t(ADV), t(MASK), clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx((-2.56 - 1.8 + 0.8) / 3)
    # With r=1.25 the high clip binds at .2 but not at .28.
    logp, old = case([[1.25, 1.0], [1.0, 1.0]])
    adv, mask = t([1.0, 1.0]), torch.ones(2, 2, dtype=torch.float64)
    loss_02, m_02 = grpo_loss(logp, old, None, adv, mask, clip_high=0.2)
    loss_028, m_028 = grpo_loss(logp, old, None, adv, mask, clip_high=0.28)
    assert loss_02.item() == pytest.approx(-(1.2 + 3.0) / 4)
    assert loss_028.item() == pytest.approx(-(1.25 + 3.0) / 4)
    assert (m_02["clip_frac"].item(), m_028["clip_frac"].item()) == (0.25, 0.0)
    # A wider low clip lets r=0.5 through: min(-0.5, clamp(.5, .6, ..)*-1 = -0.6) = -0.6
    logp, old = case()
    loss, _ = grpo_loss(logp, old, None, t(ADV), t(MASK), clip_low=0.4)
    assert loss.item() == pytest.approx((-2.4 - 1.8 + 0.6) / 3)


def test_k3_kl_and_beta():
    # d = ref - logp = [[0, ln2], [-ln2, 0]] -> k3 = e^d - d - 1 = [[0, 1-ln2], [ln2-.5, 0]].
    # Masked sum of k3 = (1 - ln2) + (ln2 - .5) = 0.5 over 3 tokens.
    logp, old = case()
    d = t([[0.0, math.log(2)], [-math.log(2), 0.0]])
    ref = logp.detach() + d
    loss, m = grpo_loss(logp, old, ref, t(ADV), t(MASK), beta=0.1)
    assert m["kl"].item() == pytest.approx(0.5 / 3)
    assert loss.item() == pytest.approx((-3.4 + 0.1 * 0.5) / 3)
    # beta 0 with a reference: KL is still reported but does not enter the loss.
    loss0, m0 = grpo_loss(logp, old, ref, t(ADV), t(MASK), beta=0.0)
    assert loss0.item() == pytest.approx(-3.4 / 3)
    assert m0["kl"].item() == pytest.approx(0.5 / 3)


def test_beta_needs_reference():
    logp, old = case()
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, None, t(ADV), t(MASK), beta=0.04)


def test_gradient_is_zero_where_clip_binds():
    logp, old = case()
    loss, _ = grpo_loss(logp, old, None, t(ADV), t(MASK))
    loss.backward()
    # d(-r*A)/d logp = -r*A at unclipped unmasked tokens, divided by 3 masked tokens:
    # (0,1): -0.9*2/3 = -0.6. Clipped (0,0), (1,0) and masked (1,1): 0.
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, -0.6, 0.0, 0.0])


def test_kl_gradient():
    # d/dlogp of beta*(e^{ref-logp} - (ref-logp) - 1) = beta*(1 - e^{ref-logp}).
    # One token, A = 0 so pg contributes nothing: ref - logp = ln2 -> 0.5*(1-2) = -0.5.
    logp = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    ref = torch.full((1, 1), math.log(2), dtype=torch.float64)
    loss, _ = grpo_loss(logp, logp.detach(), ref, t([0.0]), torch.ones(1, 1), beta=0.5)
    loss.backward()
    assert logp.grad.item() == pytest.approx(-0.5)


def test_empty_mask_gives_zero_not_nan():
    logp, old = case()
    zeros = torch.zeros(2, 2, dtype=torch.float64)
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        loss, m = grpo_loss(logp, old, None, t(ADV), zeros, agg=agg)
        assert loss.item() == 0.0
        assert m["clip_frac"].item() == 0.0


def test_loss_validates_inputs():
    logp, old = case()
    with pytest.raises(ValueError, match="agg"):
        grpo_loss(logp, old, None, t(ADV), t(MASK), agg="sum")
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, old, None, t([1.0, 2.0, 3.0]), t(MASK))
    with pytest.raises(ValueError, match="shape"):
        grpo_loss(logp, old[:, :1], None, t(ADV), t(MASK))


def test_metrics_are_detached():
    logp, old = case()
    _, m = grpo_loss(logp, old, None, t(ADV), t(MASK))
    assert {"clip_frac", "kl", "ratio_mean"} <= m.keys()
    assert not any(v.requires_grad for v in m.values())


# ---------------------------------------------------------------- helpers


def test_token_logprobs_and_entropy():
    # logits [0, 0, ln2] -> probs [1/4, 1/4, 1/2]; entropy = 2*(1/4)ln4 + (1/2)ln2 = 1.5 ln2.
    logits = t([[[0.0, 0.0, math.log(2)], [0.0, 0.0, 0.0]]])
    ids = torch.tensor([[2, 0]])
    assert token_logprobs(logits, ids)[0].tolist() == pytest.approx(
        [math.log(0.5), math.log(1 / 3)]
    )
    assert entropy_from_logits(logits)[0].tolist() == pytest.approx(
        [1.5 * math.log(2), math.log(3)]
    )


def test_token_logprobs_temperature_and_bf16():
    # logits [0, ln4] at temperature 2 -> [0, ln2] -> probs [1/3, 2/3].
    logits = t([[[0.0, math.log(4)]]])
    out = token_logprobs(logits, torch.tensor([[1]]), temperature=2.0)
    assert out.item() == pytest.approx(math.log(2 / 3))
    out_bf16 = token_logprobs(logits.bfloat16(), torch.tensor([[1]]))
    assert out_bf16.dtype == torch.float32
    assert out_bf16.item() == pytest.approx(math.log(0.8), abs=1e-2)
    with pytest.raises(ValueError, match="misaligned"):
        token_logprobs(logits, torch.tensor([[1, 0]]))


def test_filter_tied_groups():
    keep = filter_tied_groups(t([1, 1, 1, 0, 1, 0, 0.5, 0.5, 0.5]), 3)
    assert keep.tolist() == [False, True, False]
    assert filter_tied_groups(t([1.0, 1.0 + 1e-9]), 2, atol=1e-6).tolist() == [False]
    assert filter_tied_groups(t([1.0, 1.0 + 1e-9]), 2).tolist() == [True]


def test_masked_mean():
    assert masked_mean(t([[1.0, 5.0], [3.0, 7.0]]), t([[1, 0], [1, 0]])).item() == 2.0


def test_is_finite_loss():
    assert is_finite_loss(torch.tensor(1.5))
    assert is_finite_loss(0.0)
    assert not is_finite_loss(torch.tensor(float("nan")))
    assert not is_finite_loss(torch.tensor(float("-inf")))
    assert not is_finite_loss(float("inf"))


def test_clip_grad_norm():
    # grads (3, 4): norm 5; clipped to 1 -> (0.6, 0.8).
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    assert clip_grad_norm([p], None) == pytest.approx(5.0)
    assert p.grad.tolist() == [3.0, 4.0]
    assert clip_grad_norm([p], 1.0) == pytest.approx(5.0)
    assert p.grad.tolist() == pytest.approx([0.6, 0.8], rel=1e-5)
    q = torch.nn.Parameter(torch.zeros(1))
    q.grad = torch.tensor([float("nan")])
    assert not math.isfinite(clip_grad_norm([q], 1.0))
    assert clip_grad_norm([torch.nn.Parameter(torch.zeros(1))], 1.0) == 0.0
