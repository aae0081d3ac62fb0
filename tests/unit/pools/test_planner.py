"""Planner: exactness against brute force, lexicographic training, infeasibility, scale."""

from __future__ import annotations

import math
import random

import pytest
from r1platform.pools import scenarios
from r1platform.pools.catalog import load_catalog
from r1platform.pools.errors import FitError, InfeasibleError
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.plan_model import PlanRequest
from r1platform.pools.planner import plan
from r1platform.pools.reference import brute_force_cost
from r1platform.pools.workloads import GpuRange, ServingWorkload, SloSpec, TrainingJob, Workloads

CAT = load_catalog()


def _fleet(*pools: Pool) -> Fleet:
    return Fleet(pools=list(pools), catalog=CAT)


def _svc(name, model, rate, **kw) -> ServingWorkload:
    return ServingWorkload(
        name=name,
        model=model,
        request_rate=rate,
        avg_input_tokens=500,
        avg_output_tokens=800,
        slo=SloSpec(ttft_p99_s=2.0, tpot_p99_s=0.1),
        **kw,
    )


@pytest.mark.parametrize("seed", range(6))
def test_ilp_matches_brute_force_on_small_instances(seed):
    rng = random.Random(seed)
    types = rng.sample(["H100", "A100-80G", "L40S", "L4", "T4", "A10G"], 3)
    fleet = _fleet(
        *[
            Pool(
                name=t.lower(),
                gpu=t,
                nodes=1,
                gpus_per_node=rng.choice([1, 2]),
                max_nodes=rng.choice([2, 3]),
            )
            for t in types
        ]
    )
    models = ["r1-distill-qwen-1.5b", "r1-distill-qwen-7b"]
    wl = Workloads(serving=[_svc(f"d{i}", models[i], rng.uniform(1, 12)) for i in range(2)])
    try:
        want = brute_force_cost(fleet, wl)
    except FitError:
        return
    if math.isinf(want):
        with pytest.raises(InfeasibleError):
            plan(PlanRequest(fleet, wl))
        return
    got = plan(PlanRequest(fleet, wl))
    assert got.cost_per_hour == pytest.approx(want, rel=1e-6)


def test_picks_cheapest_type_and_json_shape():
    # 7B at 6 rps: compare per-rps price of H100 vs L4 by hand from the options themselves.
    fleet = _fleet(
        Pool(name="h100", gpu="H100", nodes=1, gpus_per_node=8),
        Pool(name="l4", gpu="L4", nodes=8, gpus_per_node=1),
    )
    wl = Workloads(serving=[_svc("chat", "r1-distill-qwen-7b", 6.0)])
    p = plan(PlanRequest(fleet, wl))
    j = p.to_json()
    assert set(j) >= {"feasible", "cost_per_hour", "serving", "training", "pools", "options"}
    assert set(j["serving"][0]) == {
        "deployment",
        "pool",
        "gpu",
        "replicas",
        "tp",
        "pp",
        "gpus",
        "capacity_rps",
        "cost_per_hour",
        "model",
        "dtype",
        "quantization",
        "kv_cache_dtype",
        "fp8_kernel",
    }
    assert set(j["options"][0]) >= {
        "tp",
        "pp",
        "gpus_per_replica",
        "replica_capacity_rps",
        "replica_cost_per_hour",
    }
    # Audit: the chosen cost equals sum(replicas x replica_cost) and covers the demand.
    assert sum(s["capacity_rps"] for s in j["serving"]) >= 6.0
    assert j["cost_per_hour"] == pytest.approx(sum(s["cost_per_hour"] for s in j["serving"]))
    # And no single-option placement from the audited options is cheaper.
    for o in j["options"]:
        alone = math.ceil(6.0 / o["replica_capacity_rps"]) * o["replica_cost_per_hour"]
        assert j["cost_per_hour"] <= alone + 1e-9


def test_deterministic():
    f = scenarios.fleet(400)
    w = scenarios.workloads(8, seed=3, total_gpus=400, n_jobs=3)
    a, b = plan(PlanRequest(f, w)).to_json(), plan(PlanRequest(f, w)).to_json()
    a["solver"].pop("time_s")
    b["solver"].pop("time_s")
    assert a == b


def test_training_gets_leftover_by_priority_within_min_max_and_types():
    fleet = _fleet(
        Pool(name="h100", gpu="H100", nodes=2, gpus_per_node=8),
        Pool(name="l4", gpu="L4", nodes=4, gpus_per_node=1),
    )
    wl = Workloads(
        serving=[_svc("chat", "r1-distill-qwen-7b", 30.0, gpu_types=["H100"])],
        training=[
            TrainingJob(
                name="hi",
                model="r1-distill-qwen-7b",
                gpus=GpuRange(min=4, max=64),
                gpu_types=["H100"],
                priority=10,
            ),
            TrainingJob(
                name="lo", model="r1-distill-qwen-1.5b", gpus=GpuRange(min=2, max=3), priority=1
            ),
            TrainingJob(
                name="big", model="r1-distill-qwen-7b", gpus=GpuRange(min=32, max=32), priority=5
            ),
        ],
    )
    p = plan(PlanRequest(fleet, wl))
    serving = sum(s.gpus for s in p.serving)
    got = p.training_gpus()
    # "hi" takes every H100 serving leaves; "lo" fits on L4 within its max; "big" cannot get 32.
    assert got["hi"] == 16 - serving
    assert got["lo"] == 3
    assert "big" not in got
    assert any("big" in b for b in p.binding)
    for u in p.pools:
        assert u.gpus_serving + u.gpus_training + u.gpus_free == u.gpus_capacity
        assert u.gpus_free >= 0


@pytest.mark.parametrize("method", ["ilp", "greedy"])
def test_minimum_shares_before_growth(method):
    # 16 H100s left to training: the high-priority job could take all 16 (its max), but the
    # lower-priority "mid" job's minimum comes first; "hi" then grows into the rest.
    fleet = _fleet(
        Pool(name="h100", gpu="H100", nodes=2, gpus_per_node=8),
        Pool(name="l4", gpu="L4", nodes=4, gpus_per_node=1),
    )

    def job(name: str, lo: int, hi: int, priority: int) -> TrainingJob:
        return TrainingJob(
            name=name,
            model="r1-distill-qwen-1.5b",
            gpus=GpuRange(min=lo, max=hi),
            gpu_types=["H100"],
            priority=priority,
        )

    wl = Workloads(
        serving=[_svc("chat", "r1-distill-qwen-1.5b", 1.0, gpu_types=["L4"])],
        # "wide", the lowest: its minimum does not fit beside the others', so it waits.
        training=[job("hi", 4, 16, 10), job("mid", 4, 8, 5), job("wide", 12, 12, 1)],
    )
    got = plan(PlanRequest(fleet, wl, method=method)).training_gpus()
    assert got == {"hi": 12, "mid": 4}, got


def test_infeasible_reports_missing_gpus_per_pool():
    # R1 on H100 needs 2 nodes (TP 8 x PP 2 = 16 GPUs); 2 rps needs more than one replica.
    fleet = _fleet(Pool(name="h100", gpu="H100", nodes=2, gpus_per_node=8))
    wl = Workloads(serving=[_svc("r1-671b", "deepseek-r1", 20.0)])
    with pytest.raises(InfeasibleError) as e:
        plan(PlanRequest(fleet, wl))
    msg = str(e.value)
    assert "more H100-class GPUs (pool h100) for r1-671b" in msg
    need = e.value.missing[0]["gpus"]
    assert need > 0 and need % 16 == 0  # whole 16-GPU replicas


def test_model_that_fits_nowhere():
    fleet = _fleet(Pool(name="l4", gpu="L4", nodes=1, gpus_per_node=1))
    wl = Workloads(serving=[_svc("r1-671b", "deepseek-r1", 1.0)])
    with pytest.raises(FitError, match="'deepseek-r1' fits on no pool"):
        plan(PlanRequest(fleet, wl))


def test_greedy_is_feasible_and_not_cheaper_than_ilp():
    f = scenarios.fleet(2000)
    w = scenarios.workloads(20, seed=7, total_gpus=2000, n_jobs=4)
    ilp, greedy = plan(PlanRequest(f, w)), plan(PlanRequest(f, w, method="greedy"))
    assert greedy.solver["method"] == "greedy"
    assert greedy.cost_per_hour >= ilp.cost_per_hour - 1e-6
    for p in (ilp, greedy):
        assert all(u.gpus_free >= 0 for u in p.pools)


def test_scale_10k_gpus_50_deployments():
    f = scenarios.fleet(10_000)
    w = scenarios.workloads(50, seed=1, total_gpus=10_000, n_jobs=10)
    p = plan(PlanRequest(f, w))
    # Speed is bench/planner.py's job (it compares against a peer in the same run); here the
    # fleet-scale path must take the ILP route and respect its own LP bound.
    assert p.solver["method"] == "ilp" and p.solver["serving_status"] == "optimal"
    assert p.cost_per_hour >= p.solver["lp_bound"] - 1e-6


def test_measured_replica_rps_overrides_the_estimate(tmp_path):
    from r1platform.pools.fleet import load_fleet
    from r1platform.pools.plan_model import PlanRequest
    from r1platform.pools.planner import plan
    from r1platform.pools.workloads import load_workloads

    (tmp_path / "p.yaml").write_text(
        "pools:\n  - {name: l4, gpu: L4, nodes: 1, gpus_per_node: 4, min_nodes: 1, max_nodes: 1}\n"
    )
    (tmp_path / "w.yaml").write_text(
        "serving:\n  - {name: tiny, model: tiny-r1, request_rate: 9, avg_input_tokens: 16,\n"
        "     avg_output_tokens: 48, slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.05},\n"
        "     replica_rps: {L4: 4.0}}\n"
    )
    fleet = load_fleet(tmp_path / "p.yaml")
    p = plan(PlanRequest(fleet, load_workloads(tmp_path / "w.yaml", fleet.catalog))).to_json()
    # 9 rps at a measured 4 rps per replica needs 3 replicas; the roofline would say 1.
    assert p["serving"][0]["replicas"] == 3
    assert p["options"][0]["replica_capacity_rps"] == 4.0


@pytest.mark.parametrize("method", ["ilp", "greedy"])
def test_idle_deployment_keeps_min_replicas_on_the_cheapest_option(method):
    # No traffic must not scale an endpoint to zero unless asked: the next request would wait
    # minutes for weights to load.
    fleet = _fleet(
        Pool(name="h100", gpu="H100", nodes=1, gpus_per_node=8),
        Pool(name="l4", gpu="L4", nodes=4, gpus_per_node=1),
    )
    idle = Workloads(serving=[_svc("chat", "r1-distill-qwen-1.5b", 0.0, min_replicas=2)])
    p = plan(PlanRequest(fleet, idle, method=method))
    assert sum(s.replicas for s in p.serving) == 2
    cheapest = min(o.replica_cost_per_hour for o in p.options)
    assert p.cost_per_hour == pytest.approx(2 * cheapest)
    if method == "ilp":
        assert p.cost_per_hour == pytest.approx(brute_force_cost(fleet, idle))
    zero = Workloads(serving=[_svc("chat", "r1-distill-qwen-1.5b", 0.0, min_replicas=0)])
    assert plan(PlanRequest(fleet, zero, method=method)).serving == []
