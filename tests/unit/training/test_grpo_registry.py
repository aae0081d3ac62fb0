"""Registered advantage estimators and policy losses, and the two shared pure pieces
(`agg_loss`, `kl_penalty`), against values computed by hand in each comment."""

import math

import pytest
import torch
from r1platform.training import grpo


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_registries_hold_the_named_variants():
    assert {"grpo", "dr_grpo"} <= set(grpo.ADV_ESTIMATORS)
    assert {"grpo", "gspo"} <= set(grpo.POLICY_LOSSES)
    with pytest.raises(ValueError, match="unknown policy loss 'nope'"):
        grpo.get_policy_loss("nope")
    with pytest.raises(ValueError, match="unknown advantage estimator 'nope'"):
        grpo.get_adv_estimator("nope")
    with pytest.raises(ValueError, match="already registered"):
        grpo.register_policy_loss("grpo")(lambda *a, **k: None)


def test_a_new_variant_is_one_registered_function():
    @grpo.register_adv_est("test_rank_only")
    def rank_only(rewards, group_size, eps=1e-6):
        return (rewards > rewards.view(-1, group_size).median(1).values.repeat_interleave(
            group_size)).to(rewards.dtype)  # fmt: skip

    try:
        got = grpo.get_adv_estimator("test_rank_only")(t([0, 1, 2, 3]), 4)
        assert got.tolist() == [0, 0, 1, 1]  # median of [0,1,2,3] is 1 (lower middle)
    finally:
        del grpo.ADV_ESTIMATORS["test_rank_only"]


def test_grpo_estimator_divides_by_unbiased_std():
    # [0, 1, 1, 2]: mean 1, unbiased var (1+0+0+1)/3 = 2/3.
    s = math.sqrt(2 / 3) + 1e-6
    got = grpo.get_adv_estimator("grpo")(t([0, 1, 1, 2]), 4)
    assert got.tolist() == pytest.approx([-1 / s, 0, 0, 1 / s], abs=1e-9)


def test_dr_grpo_estimator_only_centres():
    # [0, 1, 1, 2] -> mean 1 -> [-1, 0, 0, 1]; [5, 5] -> [0, 0] (no std, no eps).
    got = grpo.get_adv_estimator("dr_grpo")(t([0, 1, 1, 2, 5, 5, 4, 6]), 4)
    assert got.tolist() == pytest.approx([-1, 0, 0, 1, 0, 0, -1, 1])


def test_token_level_grpo_loss_by_hand():
    # One sequence, ratios [1.5, 0.9], A = 2, clip .2/.2: min(3.0, 2.4)=2.4 and min(1.8, 1.8).
    old = torch.full((1, 2), math.log(0.5), dtype=torch.float64)
    logp = old + torch.log(t([[1.5, 0.9]]))
    term = grpo.get_policy_loss("grpo")(logp, old, t([2.0]), t([[1, 1]]), clip_low=0.2,
                                        clip_high=0.2)  # fmt: skip
    assert term.per_token[0].tolist() == pytest.approx([-2.4, -1.8])
    assert term.clipped_high.tolist() == [[1.0, 0.0]] and term.clipped_low.tolist() == [[0, 0]]


def test_gspo_uses_one_sequence_ratio():
    # Token log-ratios [ln 1.5, ln 0.9, (masked) ln 9]: s = exp((ln 1.5 + ln 0.9) / 2)
    # = sqrt(1.35) ~ 1.1619. A = 1, clip .1/.1: s > 1.1 so the clipped 1.1 wins on every
    # token -> per-token loss -1.1, all clipped high; the masked token does not count.
    old = torch.zeros((1, 3), dtype=torch.float64)
    logp = (old + torch.log(t([[1.5, 0.9, 9.0]]))).requires_grad_(True)
    mask = t([[1, 1, 0]])
    term = grpo.get_policy_loss("gspo")(logp, old, t([1.0]), mask, clip_low=0.1, clip_high=0.1)
    s = math.sqrt(1.35)
    assert term.ratio[0, :2].tolist() == pytest.approx([s, s])
    assert term.per_token[0, :2].tolist() == pytest.approx([-1.1, -1.1])
    assert term.clipped_high[0, :2].tolist() == [1.0, 1.0]


def test_gspo_gradient_is_the_sequence_ratio_times_token_grad():
    # Unclipped (A = -1, s = sqrt(1.35) is inside [1 - .5, 1 + .5]): loss per token = s * 1,
    # token-mean over 2 tokens -> d loss / d logp_t = s / 2 for each unmasked token, 0 masked.
    old = torch.zeros((1, 3), dtype=torch.float64)
    logp = (old + torch.log(t([[1.5, 0.9, 9.0]]))).requires_grad_(True)
    mask = t([[1, 1, 0]])
    loss, metrics = grpo.compute_loss(logp, old, None, t([-1.0]), mask, policy_loss="gspo",
                                      clip_low=0.5, clip_high=0.5)  # fmt: skip
    s = math.sqrt(1.35)
    assert float(loss.detach()) == pytest.approx(s)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([s / 2, s / 2, 0.0])
    assert float(metrics["clip_frac"]) == 0.0 and float(metrics["ratio_mean"]) == pytest.approx(s)


def test_compute_loss_with_grpo_equals_grpo_loss():
    torch.manual_seed(0)
    logp, old, ref = (torch.randn(3, 4, dtype=torch.float64) * 0.1 for _ in range(3))
    adv, mask = torch.randn(3, dtype=torch.float64), (torch.rand(3, 4) > 0.3).double()
    a, ma = grpo.grpo_loss(logp, old, ref, adv, mask, beta=0.04, agg="seq-mean-token-mean")
    b, mb = grpo.compute_loss(logp, old, ref, adv, mask, policy_loss="grpo", beta=0.04,
                              agg="seq-mean-token-mean")  # fmt: skip
    assert float(a) == float(b) and all(float(ma[k]) == float(mb[k]) for k in ma)


def test_agg_loss_modes_by_hand():
    per_token = t([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    assert float(grpo.agg_loss(per_token, mask, "token-mean")) == pytest.approx(6 / 3)
    # seq means 2 and 2 -> 2
    assert float(grpo.agg_loss(per_token, mask, "seq-mean-token-mean")) == pytest.approx(2.0)
    # sum 6 over N*T = 6
    assert float(grpo.agg_loss(per_token, mask, "seq-mean-token-sum-norm")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="agg must be one of"):
        grpo.agg_loss(per_token, mask, "sum")  # type: ignore[arg-type]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum-norm", "seq-mean-token-mean"])
def test_ranks_with_rank_norm_equal_one_worker_with_the_whole_batch(agg):
    """Two data-parallel ranks with unequal token counts and padded lengths (each batch padded
    to its own longest row), each using rank_norm's divisor, then gradients averaged (what DDP
    does): the gradient of one worker holding both batches."""
    torch.manual_seed(1)
    logp = (torch.randn(4, 5, dtype=torch.float64) * 0.1).requires_grad_()
    old, adv = logp.detach() + 0.01, torch.randn(4, dtype=torch.float64)
    mask = t([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    (whole,) = torch.autograd.grad(grpo.compute_loss(logp, old, None, adv, mask, agg=agg)[0], logp)
    ranks = [(slice(0, 2), 5), (slice(2, 4), 2)]  # (rows, that rank's padded length)
    shapes = [(float(mask[h, :n].sum()), 2, n) for h, n in ranks]
    norm = grpo.rank_norm(agg, shapes)

    def grads(norm):
        return [
            torch.autograd.grad(
                grpo.compute_loss(
                    logp[h, :n], old[h, :n], None, adv[h], mask[h, :n], agg=agg, norm=norm
                )[0],
                logp,
            )[0]
            for h, n in ranks
        ]

    assert torch.allclose(sum(grads(norm)) / 2, whole)
    if norm is not None:  # each rank's own divisor misweighs the ranks
        assert not torch.allclose(sum(grads(None)) / 2, whole)


def test_rank_norm_of_one_rank_is_its_own_divisor():
    assert grpo.rank_norm("token-mean", [(9.0, 2, 5)]) == 9.0
    assert grpo.rank_norm("seq-mean-token-sum-norm", [(9.0, 2, 5)]) == 10.0
    assert grpo.rank_norm("seq-mean-token-mean", [(9.0, 2, 5)]) is None


def test_kl_penalty_estimators_by_hand():
    # logp = ln .5, ref = ln .25: d = ref - logp = -ln 2.
    logp, ref = t([[math.log(0.5)]]), t([[math.log(0.25)]])
    d = -math.log(2)
    assert float(grpo.kl_penalty(logp, ref, "k1")) == pytest.approx(-d)
    assert float(grpo.kl_penalty(logp, ref, "k2")) == pytest.approx(0.5 * d * d)
    assert float(grpo.kl_penalty(logp, ref)) == pytest.approx(math.exp(d) - d - 1)
    with pytest.raises(ValueError, match="kl kind"):
        grpo.kl_penalty(logp, ref, "k9")


def test_the_policy_loss_setting_offers_exactly_the_registered_losses():
    import typing

    from r1platform.training.settings import PolicyLoss

    assert set(typing.get_args(PolicyLoss)) == set(grpo.POLICY_LOSSES)
