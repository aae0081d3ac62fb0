"""Request-size mixes (Melange-style): per-class throughput, class routing in the ILP, the
brute-force reference, scenario/trace mixes and the simulator's size-aware capacity."""

from __future__ import annotations

import math
import random

import pytest
from r1platform.pools import scenarios, sim, trace
from r1platform.pools.catalog import load_catalog
from r1platform.pools.errors import FitError, InfeasibleError, PoolsConfigError
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.options import build_options
from r1platform.pools.plan_model import PlanRequest
from r1platform.pools.planner import plan
from r1platform.pools.reference import brute_force_cost
from r1platform.pools.workloads import (
    ServingWorkload,
    SizeClass,
    SloSpec,
    Workloads,
    parse_workloads,
)

CAT = load_catalog()
# 80% short chat turns, 20% long reasoning answers (mean 280 in / 1,680 out).
CHAT = [
    SizeClass(share=0.8, input_tokens=100, output_tokens=100),
    SizeClass(share=0.2, input_tokens=1000, output_tokens=8000),
]


def _mixed(name, model, rate, mix=CHAT, **kw) -> ServingWorkload:
    return ServingWorkload(
        name=name,
        model=model,
        request_rate=rate,
        avg_input_tokens=sum(c.share * c.input_tokens for c in mix),
        avg_output_tokens=sum(c.share * c.output_tokens for c in mix),
        slo=SloSpec(ttft_p99_s=2.0, tpot_p99_s=0.1),
        size_mix=mix,
        **kw,
    )


def _fleet(*pools: Pool) -> Fleet:
    return Fleet(pools=list(pools), catalog=CAT)


L40S = Pool(name="l40s", gpu="L40S", nodes=2, gpus_per_node=4)
H200 = Pool(name="h200", gpu="H200", nodes=1, gpus_per_node=8)


def test_each_class_gets_its_own_throughput_per_layout():
    opts = build_options(_fleet(L40S, H200), [_mixed("chat", "r1-distill-qwen-7b", 5.0)])
    assert opts and all(len(o.class_capacity_rps) == 2 for o in opts)
    for o in opts:
        short, long_ = o.class_capacity_rps
        assert short > 10 * long_ > 0  # 100/100 vs 1000/8000 tokens
        # The option's own rps is the replica's rate at the full mix (harmonic by share).
        assert o.replica_capacity_rps == pytest.approx(1 / (0.8 / short + 0.2 / long_))


def test_short_requests_go_to_small_gpus_and_long_ones_to_big_gpus():
    fleet = _fleet(L40S, H200)
    wl = Workloads(serving=[_mixed("chat", "r1-distill-qwen-7b", 5.0)])
    p = plan(PlanRequest(fleet, wl))
    assert {s.pool for s in p.serving} == {"l40s", "h200"}
    alone = [plan(PlanRequest(_fleet(pool), wl)).cost_per_hour for pool in (L40S, H200)]
    assert p.cost_per_hour < 0.8 * min(alone)  # 5.78 vs 7.60 $/h (H200 only), 7.92 (L40S only)
    assert p.cost_per_hour == pytest.approx(brute_force_cost(fleet, wl), rel=1e-6)
    # Each assignment's capacity is at the mix routed to it; together they cover the demand.
    assert sum(s.capacity_rps for s in p.serving) >= 5.0 - 1e-6
    h200 = next(s for s in p.serving if s.pool == "h200")
    assert h200.capacity_rps < 8.0  # it carries the long answers, so far fewer rps
    j = p.to_json()
    assert all(len(o["class_capacity_rps"]) == 2 for o in j["options"])


def test_a_one_class_mix_is_the_plain_average():
    fleet = _fleet(L40S, H200)
    one = [SizeClass(share=1.0, input_tokens=500, output_tokens=800)]
    a = plan(PlanRequest(fleet, Workloads(serving=[_mixed("d", "r1-distill-qwen-7b", 12.0, one)])))
    b = plan(
        PlanRequest(
            fleet,
            Workloads(
                serving=[
                    _mixed("d", "r1-distill-qwen-7b", 12.0, one).model_copy(
                        update={"size_mix": None}
                    )
                ]
            ),
        )
    )
    assert a.cost_per_hour == pytest.approx(b.cost_per_hour)
    assert [(s.pool, s.replicas) for s in a.serving] == [(s.pool, s.replicas) for s in b.serving]


@pytest.mark.parametrize("seed", range(5))
def test_ilp_with_size_mixes_matches_brute_force(seed):
    rng = random.Random(100 + seed)
    types = rng.sample(["H100", "A100-80G", "L40S", "L4", "T4"], 2)
    fleet = _fleet(
        *[
            Pool(name=t.lower(), gpu=t, nodes=1, gpus_per_node=rng.choice([1, 2]), max_nodes=2)
            for t in types
        ]
    )
    serving = []
    for i, model in enumerate(["r1-distill-qwen-1.5b", "r1-distill-qwen-7b"]):
        mix = scenarios.size_mix(
            rng.choice([300, 1000]), rng.choice([300, 1500]), 0.8, 0.7, shares=(0.7, 0.3)
        )
        serving.append(_mixed(f"d{i}", model, rng.uniform(1, 10), mix))
    wl = Workloads(serving=serving)
    try:
        want = brute_force_cost(fleet, wl)
    except FitError:
        return
    if math.isinf(want):
        with pytest.raises((InfeasibleError, FitError)):
            plan(PlanRequest(fleet, wl))
        return
    got = plan(PlanRequest(fleet, wl))
    assert got.cost_per_hour == pytest.approx(want, rel=1e-6)
    assert plan(PlanRequest(fleet, wl, method="greedy")).cost_per_hour >= want - 1e-6


def test_min_replicas_still_holds_with_a_mix():
    fleet = _fleet(L40S, H200)
    p = plan(PlanRequest(fleet, Workloads(serving=[_mixed("idle", "r1-distill-qwen-7b", 0.0)])))
    assert sum(s.replicas for s in p.serving) == 1
    assert p.cost_per_hour == pytest.approx(min(o.replica_cost_per_hour for o in p.options))


def test_size_mix_validation_names_the_problem():
    base = {
        "name": "chat",
        "model": "r1-distill-qwen-7b",
        "request_rate": 1,
        "avg_input_tokens": 280,
        "avg_output_tokens": 1680,
        "slo": {"ttft_p99_s": 2, "tpot_p99_s": 0.1},
    }
    good = [c.model_dump() for c in CHAT]
    w = parse_workloads({"serving": [{**base, "size_mix": good}]}, CAT)
    assert w.serving[0].size_classes() == [(0.8, 100, 100), (0.2, 1000, 8000)]
    bad_sum = [{**good[0], "share": 0.5}, good[1]]
    with pytest.raises(PoolsConfigError, match=r"shares sum to 0\.7000"):
        parse_workloads({"serving": [{**base, "size_mix": bad_sum}]}, CAT)
    with pytest.raises(PoolsConfigError, match="mean output_tokens 1680 differs"):
        parse_workloads({"serving": [{**base, "avg_output_tokens": 800, "size_mix": good}]}, CAT)
    with pytest.raises(PoolsConfigError, match="chat"):
        parse_workloads({"serving": [{**base, "size_mix": [{"share": 1}]}]}, CAT)


def test_lognormal_buckets_keep_the_mean_and_sort_short_to_long():
    b = scenarios.lognormal_buckets(1000, 0.8)
    assert [s for s, _ in b] == pytest.approx([0.6, 0.3, 0.1])
    assert sum(s * m for s, m in b) == pytest.approx(1000)
    assert b[0][1] < 1000 < b[1][1] < b[2][1]
    mix = scenarios.size_mix(500, 3000, 0.8, 0.7)
    assert len(mix) == 9 and sum(c.share for c in mix) == pytest.approx(1.0)
    wl = scenarios.workloads(3, seed=3, total_gpus=500, size_sigma=(0.8, 0.7))
    plain = scenarios.workloads(3, seed=3, total_gpus=500)
    for w, p in zip(wl.serving, plain.serving, strict=True):  # same draws, mix added
        assert w.model_copy(update={"size_mix": None}) == p
        assert len(w.size_classes()) == 9


def test_azure_trace_measures_the_size_spread(tmp_path):
    import random

    rng = random.Random(0)
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for k in range(3000):  # ln-normal sigma 0.8 (context) and 0.7 (generated)
        cin, cout = rng.lognormvariate(7.0, 0.8), rng.lognormvariate(5.5, 0.7)
        rows.append(f"{k * 0.5},{cin:.3f},{cout:.3f}")
    p = tmp_path / "t.csv"
    p.write_text("\n".join(rows) + "\n")
    t = trace.azure_csv(p, 60)
    assert t.sigma_input == pytest.approx(0.8, abs=0.05)
    assert t.sigma_output == pytest.approx(0.7, abs=0.05)


def test_simulator_capacity_routes_sizes_across_replicas():
    # One class: capacity is replicas x rps.
    assert sim.mix_capacity([1.0], [((4.0,), 3)]) == pytest.approx(12.0)
    # Two specialised groups: A only serves short (10 rps), B long (1 rps); at 80/20 the long
    # class binds on B: L x 0.2 <= 2 x 1 -> L = 10, short needs 8 <= 1 x 10.
    groups = [((10.0, 0.0), 1), ((0.0, 1.0), 2)]
    assert sim.mix_capacity([0.8, 0.2], groups) == pytest.approx(10.0)
    # Nothing that serves the long class: the mix cannot be served at all.
    assert sim.mix_capacity([0.8, 0.2], [((10.0, 0.0), 5)]) == pytest.approx(0.0)


def test_simulation_with_size_mixes_runs_every_policy():
    fleet = scenarios.fleet(120, mix={"H100": 0.5, "L40S": 0.5})
    gpus = sum(p.gpus_capacity for p in fleet.pools)
    wl = scenarios.workloads(2, seed=5, total_gpus=gpus, load=0.3, size_sigma=(0.8, 0.7))
    cfg = sim.SimConfig(duration_s=2 * 3600, control_interval_s=600, seed=2)
    tr = trace.synthetic(86400, cfg.tick_s, 2)
    res = {r.policy: r for r in sim.run_all(fleet, list(wl.serving), [], tr, cfg)}
    for r in res.values():
        assert 0.0 <= r.slo_attainment <= 1.0 and r.cost > 0
    assert res["static"].slo_attainment > 0.99  # planned for the peak at the mix
