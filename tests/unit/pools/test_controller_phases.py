"""observe -> plan -> act -> record, each phase on its own; the metrics the record phase
exports; the controller actor's health."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from r1platform.pools import decisions as rec
from r1platform.pools.control_config import ControllerConfig
from r1platform.pools.controller import Controller
from r1platform.pools.controller_actor import ControllerLoop, describe
from r1platform.pools.cycle import Observation
from r1platform.pools.memory_actuators import (
    MemoryCapacity,
    MemoryServe,
    MemoryTraining,
    StaticLoad,
)
from r1platform.pools.prom import EXPORTED_NAMES, ControllerMetrics
from r1platform.pools.protocols import DeploymentLoad

from pools.one_pool_world import chat_and_grpo, h100_fleet

FLEET = h100_fleet()
WL = chat_and_grpo(rate=2.0)


@pytest.fixture
def ctl(tmp_path):
    train = MemoryTraining()
    train.gpus["grpo"] = 4
    return Controller(
        FLEET,
        WL,
        StaticLoad(WL),
        MemoryServe(),
        MemoryCapacity(),
        train,
        ControllerConfig(lend_cooldown_s=0),
        clock=lambda: 1000.0,
        record_path=str(tmp_path / "d.jsonl"),
        metrics=ControllerMetrics(),
    )


def test_observe_reads_without_acting(ctl):
    ctl.serve.replicas[("chat", "h100")] = 2
    ctl.mem.pending_grow["grpo"] = (6, 990.0)  # a grow in flight counts as held
    obs = ctl.observe(1000.0)
    assert obs.serving_now == {("chat", "h100"): 2}
    assert obs.training_now == {"grpo": 6}
    assert obs.loads["chat"].request_rate == 2.0
    assert ctl.serve.calls["set_replicas"] == 0 and ctl.training.calls["grow"] == 0
    assert ctl.mem.rates == {}  # the demand estimate is the plan phase's


def test_observe_leaves_out_jobs_that_are_not_running(ctl):
    ctl.training.current_gpus = lambda job: None
    obs = ctl.observe(1000.0)
    assert obs.absent == ["grpo"] and obs.workloads.training == []


def _obs(**kw) -> Observation:
    base = dict(
        now=1000.0,
        fleet=FLEET,
        workloads=WL,
        loads={"chat": DeploymentLoad(0.0, 0.0, 2.0)},
        serving_now={},
        training_now={"grpo": 4},
    )
    return Observation(**{**base, **kw})


def test_plan_is_a_function_of_the_observation(ctl):
    planned = ctl.plan(_obs())
    assert planned.rates["chat"] == pytest.approx(2.0 * 1.15)  # headroom
    assert sum(s.capacity_rps for s in planned.plan.serving) >= planned.rates["chat"]
    assert ctl.last_plan is planned.plan
    assert ctl.serve.calls["set_replicas"] == 0  # planning acts on nothing


def test_act_applies_the_plan_and_books_what_it_did(ctl):
    obs = _obs()
    planned = ctl.plan(obs)
    ds = ctl.act(obs, planned)
    kinds = {d.kind for d in ds}
    assert {"scale", "lend"} <= kinds and all(d.applied for d in ds)
    assert ctl.serve.replicas[("chat", "h100")] == planned.plan.replicas()[("chat", "h100")]
    lend = next(d for d in ds if d.kind == "lend")
    assert ctl.mem.pending_grow["grpo"][0] == lend.after
    assert ctl.capacity.requested == {"h100": 16}
    assert rec.read_last(5, ctl.record_path) == []  # recording is the last phase's


def test_record_writes_decisions_and_metrics(ctl):
    obs = _obs()
    planned = ctl.plan(obs)
    ds = ctl.act(obs, planned)
    ctl.record(ds, obs, planned)
    assert [d.kind for d in rec.read_last(10, ctl.record_path)] == [d.kind for d in ds]
    m = ctl.metrics
    lend = next(d for d in ds if d.kind == "lend")
    assert m.gpus_lent._value.get() == lend.after - lend.before
    n = planned.plan.replicas()[("chat", "h100")]
    assert m.replicas.labels(deployment="chat", pool="h100")._value.get() == n


def _scrape(m: ControllerMetrics) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_exported_names_are_exactly_what_a_scrape_sees(ctl):
    ctl.step()
    ctl.load.fail_next("read")
    ctl.step()
    assert set(_scrape(ctl.metrics)) == EXPORTED_NAMES


def test_metrics_count_decisions_errors_reclaims_and_forecast_error(ctl):
    m = ctl.metrics
    ctl.training.gpus["grpo"] = 14  # holds what serving will need
    ctl.load.rates["chat"] = 1.0
    ctl.step()
    ctl.load.rates["chat"] = 40.0
    ctl.step()
    ctl.load.fail_next("read")
    ctl.step()
    got = _scrape(m)
    kinds = {s.labels["kind"]: s.value for s in got["r1p_controller_decisions_total"]}
    assert kinds["error"] == 1 and kinds["reclaim"] >= 1
    assert got["r1p_controller_cycle_errors_total"][0].value == 1
    assert got["r1p_controller_gpus_reclaimed_total"][0].value > 0
    # Forecast for cycle 2 was 1 rps (flat trend); 40 rps came: |1 - 40| / 40.
    assert got["r1p_controller_forecast_error"][0].value == pytest.approx(39 / 40)


def test_metrics_are_served_over_http(ctl):
    from r1platform.contracts.net import free_port

    port = free_port("127.0.0.1")
    ctl.metrics.serve(port, addr="127.0.0.1")
    ctl.step()
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'r1p_controller_replicas{deployment="chat",pool="h100"}' in text
    assert "python_gc" not in text  # its own registry, not the process default


def test_controller_loop_reports_a_loop_that_ended():
    loop = ControllerLoop("", "", ControllerConfig(), None, None, "http://127.0.0.1:1")

    def broken():
        raise ConnectionError("dashboard unreachable")

    loop._build = broken
    with pytest.raises(ConnectionError):
        loop.run()
    h = loop.health()
    assert h["state"] == "failed" and "dashboard unreachable" in h["error"]
    assert "failed" in describe(h) and "dashboard unreachable" in describe(h)
    assert loop.run() == "failed"  # no second loop on the same actor
    assert "not running" in describe(None)
