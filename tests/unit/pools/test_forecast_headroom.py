"""The controller's demand side: Holt forecast, headroom from measured climbs, cold-start lead."""

from __future__ import annotations

import math
import random

import pytest
from r1platform.pools.catalog import load_catalog
from r1platform.pools.coldstart import cold_start, lead_time_s
from r1platform.pools.control_config import ControllerConfig
from r1platform.pools.demand import Memory, horizon_s, observe_rates, target_rates
from r1platform.pools.forecast import Holt
from r1platform.pools.headroom import Burstiness, shortfall_headroom
from r1platform.pools.protocols import DeploymentLoad


def test_holt_follows_a_ramp_and_extrapolates_it():
    f = Holt(alpha=0.5, beta=0.3)
    for k in range(30):
        f.update(60.0 * k, 10.0 + 0.1 * 60 * k)  # +6 rps per minute
    assert f.level == pytest.approx(10 + 6 * 29, rel=0.02)
    assert f.trend == pytest.approx(0.1, rel=0.05)
    assert f.predict(300) == pytest.approx(f.level + 30, rel=0.05)
    assert f.rise(300) > 25
    flat = Holt()
    for k in range(10):
        flat.update(60.0 * k, 5.0)
    assert flat.predict(600) == pytest.approx(5.0) and flat.rise(600) == 0.0


def test_holt_seasonal_once_a_season_is_seen():
    f = Holt(alpha=0.5, beta=0.1, season_s=3600)
    day = [10.0 if (t % 3600) < 1800 else 20.0 for t in range(0, 3 * 3600, 60)]
    for k, r in enumerate(day):
        f.update(60.0 * k, r)
    # t = 3 h - 60 s sits in the high half; the season says the rate halves within 120 s.
    assert f.predict(120) == pytest.approx(10.0, rel=0.1)


def test_headroom_spends_the_slo_budget_on_measured_climbs():
    b = Burstiness(window_s=3600)
    assert b.headroom(0.005, prior=0.15, cap=1.0) == 0.15  # nothing measured yet: the prior
    for k in range(40):  # steady: every read 5% above the forecast
        b.observe(60.0 * k, 10.5, forecast=10.0, horizon_s=60)
    steady = b.headroom(0.005, prior=0.15, cap=1.0)
    # Shortfall (0.05 - h) / 1.05 <= 0.005 -> h = 0.05 - 0.00525.
    assert steady == pytest.approx(0.05 - 0.00525, abs=1e-6)
    bursty = Burstiness(window_s=3600)
    for k in range(40):
        bursty.observe(60.0 * k, 20.0 if k % 8 == 0 else 10.0, forecast=10.0, horizon_s=60)
    high = bursty.headroom(0.005, prior=0.15, cap=1.0)
    assert steady < bursty.headroom(0.05, prior=0.15, cap=1.0) < high <= 1.0
    assert bursty.headroom(0.001, prior=0.15, cap=0.5) == 0.5  # capped
    # Old climbs leave the window: after an hour of calm the headroom comes back down.
    for k in range(40, 110):
        bursty.observe(60.0 * k, 10.5, forecast=10.0, horizon_s=60)
    assert bursty.headroom(0.005, prior=0.15, cap=1.0) == pytest.approx(steady, abs=1e-6)


def test_shortfall_headroom_is_exact_on_the_piecewise_linear_shortfall():
    xs = [0.9, 1.0, 1.1, 1.2, 1.6, 2.4]

    def short(h: float) -> float:
        return sum(max(0.0, x - 1 - h) for x in xs) / sum(xs)

    for budget in (0.001, 0.01, 0.05, 0.1):
        h = shortfall_headroom(xs, budget, cap=5.0)
        assert short(h) == pytest.approx(budget, abs=1e-12)  # the least h: the budget, spent
        assert short(h - 1e-6) > budget
    assert shortfall_headroom(xs, 0.5, cap=5.0) == 0.0  # within budget with no headroom
    assert shortfall_headroom(xs, 1e-6, cap=0.3) == 0.3
    assert shortfall_headroom([1.5] * 10, 0.0, cap=1.0) == pytest.approx(0.5)


def test_holt_follows_a_shift_at_once_and_averages_noise():
    rng = random.Random(3)
    f = Holt(alpha=0.2, beta=0.1, outlier_sd=3.0)
    for k in range(100):  # 10 rps read with 10% noise: averaged, never taken for a shift
        f.update(60.0 * k, 10.0 * (1 + rng.uniform(-0.1, 0.1)))
        assert k < 10 or not f.shifted
    assert f.level == pytest.approx(10.0, rel=0.05)
    f.update(6000.0, 30.0)  # a burst: the level jumps to it, not a fifth of the way
    assert f.shifted and f.level == pytest.approx(30.0)
    plain = Holt(alpha=0.2, beta=0.1)
    for k in range(100):
        plain.update(60.0 * k, 10.0)
    plain.update(6000.0, 30.0)
    assert plain.level < 15.0 and not plain.shifted


def test_cold_start_grows_with_model_size_and_slower_gpus():
    cat = load_catalog()
    small = cold_start("r1-distill-qwen-1.5b", cat["H100"])
    big = cold_start("r1-distill-llama-70b", cat["H100"])
    assert big.load_s > 10 * small.load_s  # weights from storage dominate for large models
    assert lead_time_s("r1-distill-llama-70b", cat["T4"]) > big.total_s  # slower warm-up
    assert cold_start("r1-distill-llama-70b", cat["H100"], tp=4).engine_s > big.engine_s
    assert lead_time_s("r1-distill-llama-70b", cat["H100"], storage_gbps=4) < big.total_s
    with pytest.raises(ValueError, match="storage_gbps"):
        cold_start("r1-distill-qwen-1.5b", cat["H100"], storage_gbps=0)


def test_demand_scales_ahead_by_the_lead_time_and_uses_measured_headroom():
    cfg = ControllerConfig(interval_s=60, headroom=0.15, lookahead_s=900)
    assert horizon_s(cfg, 100) == 160 and horizon_s(cfg, 5000) == 900
    mem = Memory()
    leads = {"a": 240.0}
    for k in range(40):  # a steady ramp: +1 rps per minute
        load = {"a": DeploymentLoad(0, 0, 10.0 + k)}
        observe_rates(load, mem, 60.0 * k, cfg, leads)
        rates = target_rates(load, mem, 60.0 * k, cfg, {"a": 1.0}, leads)
    # Provisioned for ~5 minutes (interval + lead) ahead of the 49 rps it reads now ...
    assert rates["a"] > 49 + 4
    # ... with a measured headroom: the ramp is well forecast, so less than the 15% prior.
    assert 0.0 <= mem.headroom["a"] < 0.15
    assert math.isclose(mem.forecast["a"], mem.fc["a"].predict(60))


def test_the_windowed_climbs_kept_sorted_give_the_from_scratch_headroom():
    # A day of 30 s cycles with ~5 climbs each in flight, the window sliding over them: the
    # incrementally ranked window answers exactly what a fresh sort of its samples does.
    rng = random.Random(7)
    b = Burstiness(window_s=3600)
    for i in range(600):
        t = 30.0 * i
        rate = 10.0 * (1 + 0.5 * (i % 97 < 5)) * rng.uniform(0.9, 1.1)
        b.observe(t, rate, 10.0, horizon_s=150.0, shift=i % 97 == 0)
        if i % 50 == 49:
            xs = [x for _, x, _ in b.samples]
            assert b.ranked == sorted(xs)
            assert b.calm == sorted(x for _, x, shift in b.samples if not shift)
            got = b.headroom(0.0025, prior=0.15, cap=1.0)
            assert got == pytest.approx(shortfall_headroom(xs, 0.0025, cap=1.0), abs=1e-12)
    assert all(t >= 30.0 * 599 - 3600 for t, _, _ in b.samples)  # old climbs left the window


def test_burst_climbs_buy_headroom_only_up_to_their_cap_noise_always_its_own():
    calm, bursty = Burstiness(window_s=86400), Burstiness(window_s=86400)
    for k in range(200):  # reads scatter +-20% around the forecast; every 50th is a 3x onset
        noise = 10.0 * (1.2 if k % 2 else 0.8)
        calm.observe(60.0 * k, noise, forecast=10.0, horizon_s=60)
        onset = k % 50 == 49
        bursty.observe(60.0 * k, 30.0 if onset else noise, 10.0, horizon_s=60, shift=onset)
    noise_h = calm.headroom(0.0025, prior=0.15, cap=1.0, burst_cap=0.3)
    assert noise_h == pytest.approx(calm.headroom(0.0025, prior=0.15, cap=1.0))  # no shifts
    assert bursty.headroom(0.0025, prior=0.15, cap=1.0) == 1.0  # uncapped: the onsets win
    assert bursty.headroom(0.0025, prior=0.15, cap=1.0, burst_cap=0.3) == pytest.approx(0.3)
    # Noise that needs more than the burst cap still gets all of it.
    assert bursty.headroom(0.0025, prior=0.15, cap=1.0, burst_cap=0.05) == pytest.approx(
        noise_h, abs=1e-3
    )
    assert noise_h > 0.05
