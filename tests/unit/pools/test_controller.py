"""The reconcile loop on in-memory actuators: burst -> reclaim -> scale -> give back."""

from __future__ import annotations

import math

import pytest
from r1platform.pools import decisions as rec
from r1platform.pools.actuators import MemoryCapacity, MemoryServe, MemoryTraining
from r1platform.pools.catalog import load_catalog
from r1platform.pools.control_config import ControllerConfig
from r1platform.pools.controller import Controller
from r1platform.pools.demand import Memory, target_rates
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.protocols import DeploymentLoad
from r1platform.pools.workloads import ServingWorkload, SloSpec, Workloads
from r1platform.telemetry import in_memory_exporter

from pools.one_pool_world import Clock, chat_and_grpo, h100_fleet

_EXPORTER = in_memory_exporter()


class ScriptedLoad:
    def __init__(self) -> None:
        self.rate = 1.0
        self.queued = 0.0

    def read(self) -> dict[str, DeploymentLoad]:
        return {
            "chat": DeploymentLoad(ongoing=self.rate, queued=self.queued, request_rate=self.rate)
        }


@pytest.fixture
def setup(tmp_path):
    fleet, wl = h100_fleet(), chat_and_grpo(rate=1.0, priority=1)
    load, serve, cap, train, clock = (
        ScriptedLoad(),
        MemoryServe(),
        MemoryCapacity(),
        MemoryTraining(release_after=1),
        Clock(),
    )
    cfg = ControllerConfig(interval_s=30, down_cooldown_s=120, lend_cooldown_s=60)
    ctl = Controller(
        fleet, wl, load, serve, cap, train, cfg, clock=clock, record_path=str(tmp_path / "d.jsonl")
    )
    return ctl, load, serve, cap, train, clock


def _used(serve: MemoryServe, train: MemoryTraining, ctl: Controller) -> int:
    per = {(s.deployment, s.pool): s.gpus // s.replicas for s in ctl.last_plan.serving}
    per.update(
        {
            (o.deployment, o.pool): o.gpus_per_replica
            for o in ctl.last_plan.options
            if (o.deployment, o.pool) not in per
        }
    )
    return sum(n * per[k] for k, n in serve.replicas.items()) + sum(train.gpus.values())


def test_burst_reclaims_with_checkpoint_then_gives_back(setup):
    ctl, load, serve, cap, train, clock = setup
    _EXPORTER.clear()

    # Quiet: one replica serves, training borrows the rest of the 16 H100s.
    ctl.step()
    assert serve.replicas[("chat", "h100")] >= 1
    quiet_replicas = serve.replicas[("chat", "h100")]
    serving_gpus = ctl.last_plan.serving[0].gpus
    # Lend all but the reserve (10% of serving GPUs, rounded up) kept for small rises.
    assert train.gpus["grpo"] == 16 - serving_gpus - math.ceil(0.10 * serving_gpus)
    assert cap.requested == {"h100": 16}

    # Burst: serving needs GPUs the job holds -> checkpoint-and-shrink first, no over-commit.
    load.rate = 40.0
    clock.t += 30
    ds = ctl.step()
    kinds = [d.kind for d in ds]
    assert "reclaim" in kinds
    assert train.checkpoints["grpo"] == 1
    assert _used(serve, train, ctl) <= 16
    clock.t += 30
    ctl.step()  # the job has released; serving takes the GPUs
    burst_replicas = serve.replicas[("chat", "h100")]
    assert burst_replicas > quiet_replicas
    assert _used(serve, train, ctl) <= 16

    # Noise inside the hysteresis band changes nothing.
    load.rate = 39.0
    clock.t += 30
    assert ctl.step() == []

    # After the burst: scale-down waits for the cooldown, then training gets GPUs back.
    load.rate = 1.0
    clock.t += 30
    assert [d.kind for d in ctl.step()] == []  # still inside down_cooldown_s
    for _ in range(8):
        clock.t += 30
        ctl.step()
    assert serve.replicas[("chat", "h100")] == quiet_replicas
    assert train.gpus["grpo"] > 0
    assert train.checkpoints["grpo"] == 1  # never shrunk without a checkpoint request
    assert _used(serve, train, ctl) <= 16

    spans = _EXPORTER.get_finished_spans()
    roots = {s.context.span_id: s for s in spans if s.name == "pools.reconcile"}
    assert len(roots) == 13
    for s in spans:
        if s.name in ("pools.plan", "pools.scale", "pools.reclaim", "pools.lend"):
            assert s.parent is not None and s.parent.span_id in roots
    reclaim = next(s for s in spans if s.name == "pools.reclaim")
    a = reclaim.attributes
    assert a["job"] == "grpo" and a["pool"] == "h100" and a["gpu"] == "H100"
    assert a["after"] < a["before"] and "checkpoint" in a["reason"]
    scale_up = [
        s
        for s in spans
        if s.name == "pools.scale" and s.attributes["after"] > s.attributes["before"]
    ]
    assert any(
        s.attributes["cost_per_hour_after"] > s.attributes["cost_per_hour_before"] for s in scale_up
    )
    assert scale_up[0].attributes["deployment"] == "chat"
    assert any(s.name == "pools.lend" for s in spans)

    # The local record has the same decisions, in order, readable by `r1p decisions`.
    recorded = rec.read_last(100, ctl.record_path)
    assert [d.kind for d in recorded].count("reclaim") == 1
    cycles = [d.cycle for d in recorded]
    assert cycles == sorted(cycles) and recorded[-1].kind == "lend"
    assert all(d.trace_id for d in recorded)


def test_target_rates_hysteresis():
    cfg = ControllerConfig(headroom=0.0, up_threshold=0.1, down_threshold=0.3, down_cooldown_s=100)
    mem = Memory(rates={"a": 10.0}, last_up={"a": 0.0})
    d = {"a": 1.0}

    def rate(r, now, q=0.0):
        return target_rates({"a": DeploymentLoad(0, q, r)}, mem, now, cfg, d)["a"]

    assert rate(10.5, 10) == 10.0  # inside the band
    assert rate(11.5, 10) == 11.5  # up at once
    assert rate(5.0, 50) == 10.0  # down waits for the cooldown
    assert rate(5.0, 150) == 5.0
    assert rate(10.0, 10, q=60) == pytest.approx(10 + 60 / cfg.queue_drain_s)


def test_infeasible_plan_is_recorded_not_raised(setup):
    ctl, load, *_ = setup
    load.rate = 1e6
    ds = ctl.step()
    assert ds[0].kind == "plan" and "infeasible" in ds[0].reason


def test_dry_run_acts_on_nothing(setup):
    ctl, _load, serve, cap, train, _clock = setup
    ctl.dry_run = True
    ds = ctl.step()
    assert ds and all(not d.applied for d in ds)
    assert serve.replicas == {} and train.gpus == {} and cap.requested == {}


class SlowGrowTraining(MemoryTraining):
    """A job that takes `lag` reads of current_gpus to start workers after a grow (the real
    job checkpoints and restarts its trainer first)."""

    def __init__(self, lag: int) -> None:
        super().__init__()
        self.lag, self.grows, self.wanted = lag, 0, {}

    def current_gpus(self, job: str) -> int:
        if job in self.wanted:
            gpus, left = self.wanted[job]
            if left <= 1:
                self.gpus[job] = gpus
                del self.wanted[job]
            else:
                self.wanted[job] = (gpus, left - 1)
        return self.gpus.get(job, 0)

    def grow(self, job: str, gpus: int, pool: str) -> None:
        self.grows += 1
        self.pool[job] = pool
        self.wanted[job] = (gpus, self.lag)


def test_a_grow_in_flight_is_neither_repeated_nor_double_booked(setup):
    ctl, load, serve, _cap, _train, clock = setup
    train = SlowGrowTraining(lag=3)
    train.gpus["grpo"] = 2
    ctl.training = train
    ctl.step()
    lent = train.wanted["grpo"][0]
    assert lent > 2 and train.grows == 1
    load.rate = 1.05  # a small rise inside the reserve: serving may not take the lent GPUs
    for _ in range(3):
        clock.t += 30
        ds = ctl.step()
        assert not [d for d in ds if d.kind == "lend"]  # no re-lend while the job starts
        serving_gpus = _used(serve, train, ctl) - train.gpus["grpo"]
        assert serving_gpus + lent <= 16  # the lent GPUs stay booked while the job starts
    assert train.grows == 1 and train.gpus["grpo"] == lent
    assert ctl.mem.pending_grow == {}


def test_a_grow_never_taken_up_is_given_up_after_the_timeout(setup):
    ctl, _load, _serve, _cap, _train, clock = setup
    train = SlowGrowTraining(lag=10**9)  # the job never starts the workers
    train.gpus["grpo"] = 2
    ctl.training = train
    ctl.cfg = ctl.cfg.model_copy(update={"grow_timeout_s": 90})
    ctl.step()
    clock.t += 60
    ctl.step()
    assert train.grows == 1
    clock.t += 60  # past the timeout: the GPUs are not the job's after all; offer again
    ctl.step()
    assert train.grows == 2


class AbsentJob(MemoryTraining):
    def current_gpus(self, job: str) -> int | None:
        return None


class BrokenServe(MemoryServe):
    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None:
        raise LookupError(f"Serve deployment '{deployment}@{pool}' not found in any application")


def test_jobs_not_running_get_nothing_and_failures_are_recorded_not_raised(setup):
    ctl, _load, _serve, _cap, _train, _clock = setup
    ctl.training, ctl.serve = AbsentJob(), BrokenServe()
    _EXPORTER.clear()
    ds = ctl.step()
    assert [d.kind for d in ds] == ["scale"]  # no lend to a job that is not running
    assert ctl.last_plan.training == []
    assert not ds[0].applied and "not found" in ds[0].error
    span = next(s for s in _EXPORTER.get_finished_spans() if s.name == "pools.scale")
    assert span.status.status_code.name == "ERROR" and "not found" in span.attributes["error"]
    root = next(s for s in _EXPORTER.get_finished_spans() if s.name == "pools.reconcile")
    assert root.attributes["jobs_not_running"] == "grpo"
    assert rec.read_last(5, ctl.record_path)[-1].error == ds[0].error


def test_controller_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("R1P_CONTROL_DOWN_COOLDOWN_S", "12")
    monkeypatch.setenv("R1P_CONTROL_LEND_RESERVE", "0")
    cfg = ControllerConfig(interval_s=2)
    assert (cfg.interval_s, cfg.down_cooldown_s, cfg.lend_reserve) == (2, 12, 0)
    monkeypatch.setenv("R1P_CONTROL_HEADROOM", "-1")
    with pytest.raises(ValueError, match="headroom"):
        ControllerConfig()


def test_a_dip_shorter_than_the_stabilization_window_releases_nothing():
    # Ray exports metrics every ~10 s, so a steady 10 rps reads as 10, 4, 10, 16, ...
    cfg = ControllerConfig(headroom=0.0, down_threshold=0.2, down_stabilization_s=30)
    mem = Memory(rates={"a": 10.0})
    d = {"a": 1.0}
    got = []
    for t, r in [(100, 10.0), (110, 4.0), (120, 10.0), (130, 9.0), (140, 4.0)]:
        mem.rates = target_rates({"a": DeploymentLoad(0, 0, r)}, mem, t, cfg, d)
        got.append(mem.rates["a"])
    assert got == [10.0] * 5
    for t in (150, 160, 170):  # a real fall: down once every read in the window is low
        mem.rates = target_rates({"a": DeploymentLoad(0, 0, 4.0)}, mem, t, cfg, d)
    assert mem.rates["a"] == 4.0


def test_controller_plans_one_layout_per_deployment_and_pool():
    # Serve runs deployment D on pool P as one deployment `D@P` with one TP layout; with a
    # request-size mix the ILP alone serves short requests on TP1 and long ones on TP4 there.
    from r1platform.pools.plan_model import PlanRequest
    from r1platform.pools.planner import plan, plan_one_layout
    from r1platform.pools.workloads import SizeClass

    fleet = Fleet(
        pools=[Pool(name="a100", gpu="A100-80G", nodes=4, gpus_per_node=8)], catalog=load_catalog()
    )
    mix = [
        SizeClass(share=0.8, input_tokens=200, output_tokens=200),
        SizeClass(share=0.2, input_tokens=8000, output_tokens=2000),
    ]
    wl = Workloads(
        serving=[
            ServingWorkload(
                name="chat", model="r1-distill-qwen-7b", request_rate=20,
                avg_input_tokens=1760, avg_output_tokens=560,
                slo=SloSpec(ttft_p99_s=2.0, tpot_p99_s=0.1), size_mix=mix,
            )
        ]
    )  # fmt: skip
    free = plan(PlanRequest(fleet, wl))
    assert len({(s.tp, s.pp) for s in free.serving}) > 1  # the instance this guards against
    one = plan_one_layout(PlanRequest(fleet, wl))
    assert len({(s.tp, s.pp) for s in one.serving}) == 1
    assert one.cost_per_hour >= free.cost_per_hour - 1e-9
    assert sum(s.replicas for s in one.serving) == one.replicas()[("chat", "a100")]
