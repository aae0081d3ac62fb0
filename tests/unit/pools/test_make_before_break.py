"""A deployment that moves pools keeps its old replicas until the new ones serve, then lets
them go: decide waits out the cooldown and the cold start, and the replicas the plan gave up
are no floor for the next plan (as a floor, the plan would keep them for good)."""

from __future__ import annotations

from r1platform.pools.catalog import load_catalog
from r1platform.pools.control_config import ControllerConfig
from r1platform.pools.cycle import Observation, plan_repacking, plan_request
from r1platform.pools.decide import decide, surplus
from r1platform.pools.demand import Memory
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.plan_model import Plan, PlanRequest, ServingAssignment
from r1platform.pools.protocols import DeploymentLoad
from r1platform.pools.workloads import Workloads

from pools.one_pool_world import chat

FLEET = Fleet(
    pools=[
        Pool(name="a", gpu="H100", nodes=1, gpus_per_node=8),
        Pool(name="b", gpu="L4", nodes=1, gpus_per_node=8),
    ],
    catalog=load_catalog(),
)
CFG = ControllerConfig(interval_s=30, down_cooldown_s=60)


def _plan(**replicas: int) -> Plan:
    gpu = {"a": "H100", "b": "L4"}
    rows = [
        ServingAssignment("chat", q, gpu[q], n, 1, 1, n, 10.0 * n, 1.0 * n)
        for q, n in replicas.items()
    ]
    return Plan(True, float(sum(replicas.values())), serving=rows)


def test_old_replicas_go_only_after_the_new_ones_had_their_cold_start():
    mem, p = Memory(), _plan(b=2)
    now, leads = 1000.0, {"chat": 200.0}
    # The move starts: b grows, a's replicas stay (make before break).
    acts = decide(FLEET, p, {("chat", "a"): 2}, {}, mem, now, CFG, leads=leads)
    assert [(x.pool, x.before, x.after) for x in acts] == [("b", 0, 2)]
    assert surplus(p, {("chat", "a"): 2}, acts) == {("chat", "a"): 0}
    mem.last_up["chat"] = now
    running = {("chat", "a"): 2, ("chat", "b"): 2}
    # Past the cooldown but not the 200 s cold start: b does not serve yet, a stays.
    assert decide(FLEET, p, running, {}, mem, now + 120, CFG, leads=leads) == []
    acts = decide(FLEET, p, running, {}, mem, now + 210, CFG, leads=leads)
    assert [(x.pool, x.before, x.after) for x in acts] == [("a", 2, 0)]
    assert surplus(p, running, acts) == {}


def test_replicas_the_last_plan_gave_up_are_no_floor():
    wl = Workloads(serving=[chat(5.0)])
    mem = Memory(rates={"chat": 5.0})
    obs = Observation(
        now=1000.0,
        fleet=FLEET,
        workloads=wl,
        loads={"chat": DeploymentLoad(ongoing=5.0, queued=0.0, request_rate=5.0)},
        serving_now={("chat", "a"): 2, ("chat", "b"): 2},
        training_now={},
    )
    defaults = {"chat": 5.0}
    kept = plan_request(obs, mem, CFG, defaults).keep
    assert kept == {("chat", "a"): 2, ("chat", "b"): 2}  # steady load: everything stays put
    mem = Memory(rates={"chat": 5.0})
    req = plan_request(obs, mem, CFG, defaults, surplus={("chat", "a"): 0})
    assert req.keep == {("chat", "a"): 0, ("chat", "b"): 2}


def test_floors_give_way_to_a_repack_that_is_cheaper_by_more_than_the_gain():
    # Three replicas kept from an earlier rise; one carries today's 5 rps.
    req = PlanRequest(
        FLEET, Workloads(serving=[chat(5.0)]), rates={"chat": 5.0}, keep={("chat", "a"): 3}
    )
    kept = plan_repacking(req, {}, {}, CFG)
    assert kept.replicas() == {("chat", "a"): 3}  # repack_gain 0: floors always hold
    cfg = CFG.model_copy(update={"repack_gain": 0.2})
    assert plan_repacking(req, {}, {}, cfg).replicas() == {("chat", "a"): 1}
    steep = CFG.model_copy(update={"repack_gain": 0.9})  # a third of the cost is not enough
    assert plan_repacking(req, {}, {}, steep).replicas() == {("chat", "a"): 3}
