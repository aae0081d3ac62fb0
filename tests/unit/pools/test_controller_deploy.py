"""The plan is what gets deployed: a cycle whose plan changes a deployment's layout (TP, PP,
engine profile, pool) writes serve_config(plan as applied) through the Serve actuator once;
replica-only changes stay set_replicas calls."""

from __future__ import annotations

from dataclasses import replace

from r1platform.pools.actuators import MemoryCapacity, MemoryServe, MemoryTraining
from r1platform.pools.control_config import ControllerConfig
from r1platform.pools.controller import Controller
from r1platform.pools.decide import layout_changes, layout_key
from r1platform.pools.memory_actuators import StaticLoad
from r1platform.pools.plan_model import Plan, ServingAssignment
from r1platform.pools.serve_config import layout_of, layouts_from_config, serve_config
from r1platform.pools.workloads import Workloads
from r1platform.telemetry import in_memory_exporter

from pools.one_pool_world import Clock, chat, h100_fleet

_EXPORTER = in_memory_exporter()
KEY = ("chat", "h100")


def _controller(tmp_path, rate: float = 1.0):
    wl = Workloads(serving=[chat(rate)])
    load, serve = StaticLoad(wl), MemoryServe()
    cfg = ControllerConfig(interval_s=30, down_cooldown_s=120, lend_cooldown_s=60)
    ctl = Controller(
        h100_fleet(), wl, load, serve, MemoryCapacity(), MemoryTraining(), cfg,
        clock=Clock(), record_path=str(tmp_path / "d.jsonl"),
    )  # fmt: skip
    return ctl, load, serve


def _planned_tp(tmp_path) -> int:
    ctl, _, _ = _controller(tmp_path)
    ctl.step()
    return ctl.last_plan.serving[0].tp


def _stale_tp(tmp_path) -> tuple[Controller, StaticLoad, MemoryServe]:
    """A controller that knows chat@h100 as deployed with a TP the plan will not choose (scaled
    to zero, so the old layout is not pinned and the plan is free to change it)."""
    tp = _planned_tp(tmp_path)
    ctl, load, serve = _controller(tmp_path)
    ctl.mem.layout[KEY] = (2 if tp == 1 else 1, 1)
    return ctl, load, serve


def test_tp_change_deploys_exactly_the_plans_serve_config_once(tmp_path):
    ctl, _, serve = _stale_tp(tmp_path)
    _EXPORTER.clear()
    ds = ctl.step()
    p = ctl.last_plan
    scale = {(d.target, d.pool): int(d.after) for d in ds if d.kind == "scale"}
    applied = replace(p, serving=[replace(s, replicas=scale[KEY]) for s in p.serving])
    # One write, of exactly the plan's Serve config at the replicas this cycle granted.
    assert serve.calls["deploy"] == 1 and serve.calls["set_replicas"] == 0
    assert serve.configs == [serve_config(applied)]
    deploy = [d for d in ds if d.kind == "deploy"]
    assert len(deploy) == 1 and deploy[0].applied and deploy[0].error is None
    assert deploy[0].target == "chat" and deploy[0].pool == "h100"
    assert f"TP{p.serving[0].tp}xPP1" in deploy[0].reason
    assert all(d.applied and "applied by the deploy" in d.reason for d in ds if d.kind == "scale")
    # plan -> Serve config -> Settings round-trips: the deployed config runs what was planned.
    assert layouts_from_config(serve.configs[0]) == [layout_of(s) for s in applied.serving]
    assert serve.replicas == {KEY: scale[KEY]}
    assert serve.layout == {KEY: (p.serving[0].tp, p.serving[0].pp)}
    span = next(s for s in _EXPORTER.get_finished_spans() if s.name == "pools.deploy")
    assert span.attributes["deployments"] == "chat@h100"
    assert span.attributes["after"] == scale[KEY]
    # Booked: the next cycle at the same load sees nothing to deploy.
    assert ctl.mem.deployed[KEY] == layout_key(p.serving[0])
    ctl.clock.t += 30
    ctl.step()
    assert serve.calls["deploy"] == 1


def test_replica_only_change_does_not_deploy(tmp_path):
    ctl, load, serve = _controller(tmp_path)
    ds1 = ctl.step()
    before = serve.replicas[KEY]
    load.rates["chat"] = 40.0
    ctl.clock.t += 30
    ds2 = ctl.step()
    assert serve.replicas[KEY] > before  # it did scale, through set_replicas
    assert serve.calls["set_replicas"] == 2
    assert serve.calls["deploy"] == 0 and serve.configs == []
    assert not [d for d in ds1 + ds2 if d.kind == "deploy"]


def test_failed_deploy_is_recorded_and_retried_next_cycle(tmp_path):
    ctl, _, serve = _stale_tp(tmp_path)
    old = ctl.mem.layout[KEY]
    serve.fail_next("deploy", error=ConnectionError("dashboard down"))
    ds = ctl.step()
    deploy = next(d for d in ds if d.kind == "deploy")
    assert not deploy.applied and deploy.error == "ConnectionError: dashboard down"
    # The scale riding in the deploy failed with it; nothing was booked as running.
    assert all(d.error == deploy.error and not d.applied for d in ds if d.kind == "scale")
    assert serve.replicas == {} and serve.configs == []
    assert ctl.mem.layout[KEY] == old and KEY not in ctl.mem.deployed
    ctl.clock.t += 30
    ds = ctl.step()
    assert next(d for d in ds if d.kind == "deploy").applied
    assert serve.calls["deploy"] == 2 and len(serve.configs) == 1


def _row(pool: str, tp: int, dtype: str = "bfloat16") -> ServingAssignment:
    return ServingAssignment(
        "chat", pool, "H100", 2, tp, 1, 2 * tp, 1.0, 1.0,
        model="r1-distill-qwen-7b", dtype=dtype,
    )  # fmt: skip


def test_layout_changes_names_tp_profile_and_pool_moves_but_not_replicas():
    p = Plan(True, 1.0, serving=[_row("h100", 2)])
    same = layout_key(_row("h100", 2))
    # Replica counts alone, or a D@P never seen: no deploy.
    assert layout_changes(p, {KEY: 5}, {KEY: same}, {KEY: (2, 1)}) == {}
    assert layout_changes(p, {}, {}, {}) == {}
    assert "TP1xPP1 -> TP2xPP1" in layout_changes(p, {}, {}, {KEY: (1, 1)})[KEY]
    fp16 = layout_key(_row("h100", 2, "float16"))
    assert "float16" in layout_changes(p, {KEY: 1}, {KEY: fp16}, {KEY: (2, 1)})[KEY]
    # Leaving every pool it ran on is a pool change; adding a pool beside one it keeps is not.
    assert layout_changes(p, {("chat", "a100"): 1}, {}, {}) == {KEY: "pool a100 -> h100"}
    both = Plan(True, 1.0, serving=[_row("h100", 2), _row("a100", 2)])
    assert layout_changes(both, {("chat", "a100"): 1}, {}, {}) == {}
