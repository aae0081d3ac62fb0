"""Every PlanRequest field is honoured by the ILP and by the greedy fallback alike."""

from __future__ import annotations

from dataclasses import replace

import pytest
from r1platform.pools.catalog import load_catalog
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.plan_model import PlanRequest
from r1platform.pools.planner import plan
from r1platform.pools.workloads import GpuRange, TrainingJob, Workloads

from pools.one_pool_world import chat

CAT = load_catalog()
METHODS = ["ilp", "greedy"]


def _fleet() -> Fleet:
    return Fleet(
        pools=[
            Pool(name="h100", gpu="H100", nodes=2, gpus_per_node=8),
            Pool(name="l40s", gpu="L40S", nodes=2, gpus_per_node=4),
        ],
        catalog=CAT,
    )


def _wl(rate: float = 4.0, jobs: bool = True) -> Workloads:
    return Workloads(
        serving=[chat(rate, tpot_p99_s=0.1)],
        training=[
            TrainingJob(name="grpo", model="r1-distill-qwen-1.5b", gpus=GpuRange(min=1, max=64))
        ]
        if jobs
        else [],
    )


def _base(method: str, **kw) -> PlanRequest:
    return PlanRequest(_fleet(), _wl(), method=method, time_limit_s=30, **kw)


@pytest.mark.parametrize("method", METHODS)
def test_method_is_reported(method):
    assert plan(_base(method)).solver["method"] == method


@pytest.mark.parametrize("method", METHODS)
def test_rates_override_the_workload_rate(method):
    low, high = plan(_base(method)), plan(_base(method, rates={"chat": 40.0}))
    assert sum(s.capacity_rps for s in low.serving) < 40.0  # the workload's own 4 rps plan
    assert sum(s.capacity_rps for s in high.serving) >= 40.0
    assert high.cost_per_hour > low.cost_per_hour


@pytest.mark.parametrize("method", METHODS)
def test_pinned_layout_is_the_only_one_used_in_its_pool(method):
    free = plan(_base(method, rates={"chat": 40.0}))
    options = {(o.tp, o.pp) for o in free.options if o.pool == "h100"}
    assert len(options) > 1  # there is a choice to take away
    chosen = {(s.tp, s.pp) for s in free.serving if s.pool == "h100"}
    other = sorted(options - chosen)[0]
    p = plan(_base(method, rates={"chat": 40.0}, pinned={("chat", "h100"): other}))
    assert {(s.tp, s.pp) for s in p.serving if s.pool == "h100"} <= {other}
    assert {(o.tp, o.pp) for o in p.options if o.pool == "h100"} == {other}


@pytest.mark.parametrize("method", METHODS)
def test_keep_is_a_floor_of_replicas(method):
    free = plan(_base(method, rates={"chat": 0.5}))
    floor = {("chat", "l40s"): 3}
    assert free.replicas().get(("chat", "l40s"), 0) < 3  # the floor changes the answer
    kept = plan(_base(method, rates={"chat": 0.5}, keep=floor))
    assert kept.replicas()[("chat", "l40s")] >= 3


@pytest.mark.parametrize("method", METHODS)
def test_keep_counts_toward_demand(method):
    """Kept replicas serve load: no new replica is bought for demand they already carry."""
    kept = plan(_base(method, rates={"chat": 0.5}, keep={("chat", "l40s"): 3}))
    assert sum(s.replicas for s in kept.serving) == 3


@pytest.mark.parametrize("method", METHODS)
def test_held_gpus_are_off_limits_to_serving(method):
    req = _base(method, rates={"chat": 20.0})
    free = plan(req)
    used = {u.pool: u.gpus_serving for u in free.pools}
    cap = {q.name: q.gpus_capacity for q in req.fleet.pools}
    pool = max(used, key=used.get)
    assert used[pool] > 0
    held = {pool: cap[pool] - used[pool] + 1}  # serving's free plan no longer fits there
    p = plan(replace(req, held=held))
    assert p.pools != free.pools
    for u in p.pools:
        assert u.gpus_serving <= cap[u.pool] - held.get(u.pool, 0)


@pytest.mark.parametrize("method", METHODS)
def test_job_pools_keep_a_running_job_in_its_pool(method):
    free = plan(_base(method))
    assert {t.pool for t in free.training} == {"h100"}  # left alone it goes to the big pool
    p = plan(_base(method, job_pools={"grpo": "l40s"}))
    assert [t.pool for t in p.training] == ["l40s"]


def test_greedy_and_ilp_agree_on_every_field_at_once():
    """All fields together: both methods give a plan that respects each of them."""
    kw = dict(
        rates={"chat": 10.0},
        keep={("chat", "l40s"): 2},
        held={"h100": 4},
        job_pools={"grpo": "h100"},
    )
    for method in METHODS:
        p = plan(_base(method, **kw))
        assert p.replicas()[("chat", "l40s")] >= 2
        assert sum(s.capacity_rps for s in p.serving) >= 10.0
        assert next(u for u in p.pools if u.pool == "h100").gpus_serving <= 12
        assert {t.pool for t in p.training} <= {"h100"}


def test_bad_request_fields_are_named():
    with pytest.raises(ValueError, match="method"):
        PlanRequest(_fleet(), _wl(), method="simplex")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_limit_s"):
        PlanRequest(_fleet(), _wl(), time_limit_s=0)
