"""A controller that cannot die silently: each failure injected into the in-memory actuators
is recorded as a decision with its error and trace, and the loop carries on."""

from __future__ import annotations

import pytest
from r1platform.pools import decisions as rec
from r1platform.pools.control_config import ControllerConfig
from r1platform.pools.controller import Controller
from r1platform.pools.fleet import Fleet
from r1platform.pools.memory_actuators import (
    MemoryCapacity,
    MemoryServe,
    MemoryTraining,
    StaticLoad,
)
from r1platform.telemetry import in_memory_exporter

from pools.one_pool_world import Clock, chat_and_grpo, h100_fleet

_EXPORTER = in_memory_exporter()
FLEET = h100_fleet()
WL = chat_and_grpo(rate=1.0)


@pytest.fixture
def loop(tmp_path):
    load, serve, cap, train, clock = (
        StaticLoad(WL),
        MemoryServe(),
        MemoryCapacity(),
        MemoryTraining(),
        Clock(),
    )
    cfg = ControllerConfig(interval_s=30, lend_cooldown_s=0, grow_timeout_s=90, shrink_timeout_s=90)
    ctl = Controller(
        FLEET, WL, load, serve, cap, train, cfg, clock=clock, record_path=str(tmp_path / "d.jsonl")
    )
    return ctl, load, serve, cap, train, clock


def _error_cycle(ctl: Controller) -> rec.Decision:
    _EXPORTER.clear()
    ds = ctl.step()
    assert [d.kind for d in ds] == ["error"]
    d = ds[0]
    assert not d.applied and d.error and d.trace_id
    root = next(s for s in _EXPORTER.get_finished_spans() if s.name == "pools.reconcile")
    assert root.status.status_code.name == "ERROR"
    assert f"{root.context.trace_id:032x}" == d.trace_id
    assert rec.read_last(1, ctl.record_path)[-1].error == d.error
    return d


@pytest.mark.parametrize(
    "where, method",
    [
        ("load", "read"),  # the dashboard / metrics endpoint is down
        ("serve", "current_replicas"),  # Serve's REST API is down
        ("train", "current_gpus"),  # GCS (the job's actor) does not answer
    ],
)
def test_a_failed_read_is_an_error_decision_and_the_next_cycle_works(loop, where, method):
    ctl, load, serve, _cap, train, clock = loop
    {"load": load, "serve": serve, "train": train}[where].fail_next(method)
    d = _error_cycle(ctl)
    assert "injected failure" in d.error and ctl.failures_in_a_row == 1
    clock.t += 30
    ds = ctl.step()
    assert ds and all(d.kind != "error" for d in ds)
    assert serve.replicas[("chat", "h100")] >= 1 and ctl.failures_in_a_row == 0


def test_a_failed_fleet_read_is_an_error_decision(loop):
    ctl, *_ = loop
    calls = []

    def gcs_down() -> Fleet:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("GCS unavailable")
        return FLEET

    ctl._fleet = gcs_down
    assert "GCS unavailable" in _error_cycle(ctl).error
    assert ctl.step()[0].kind != "error"


def test_run_goes_on_after_failures_with_exponential_backoff(loop):
    ctl, load, *_ = loop
    ctl.cfg = ctl.cfg.model_copy(update={"error_backoff_s": 2.0, "max_backoff_s": 5.0})
    load.fail_next("read", times=3)
    waits: list[float] = []
    ctl.run(max_cycles=5, sleep=waits.append)
    kinds = [d.kind for d in rec.read_last(50, ctl.record_path)]
    assert kinds[:3] == ["error"] * 3 and "scale" in kinds[3:]
    assert [round(w) for w in waits] == [2, 4, 5, 30]  # doubling, capped, then the interval
    assert ctl.health() == {"cycles": 5, "failures_in_a_row": 0, "last_error": None}


def test_a_failed_scale_is_recorded_and_retried_next_cycle(loop):
    ctl, _load, serve, _cap, _train, clock = loop
    serve.fail_next("set_replicas")
    ds = ctl.step()
    scale = next(d for d in ds if d.kind == "scale")
    assert not scale.applied and "injected failure" in scale.error
    assert serve.replicas == {}
    clock.t += 30
    again = next(d for d in ctl.step() if d.kind == "scale")
    assert again.applied and serve.replicas[("chat", "h100")] == scale.after


def test_a_failed_capacity_request_is_recorded(loop):
    ctl, _load, _serve, cap, *_ = loop
    cap.fail_next("request")
    ds = ctl.step()
    d = next(d for d in ds if d.kind == "capacity")
    assert not d.applied and "injected failure" in d.error and cap.requested == {}
    assert any(d.kind == "scale" and d.applied for d in ds)  # the rest of the cycle happened


def test_a_failed_lend_books_nothing_and_is_offered_again(loop):
    ctl, _load, _serve, _cap, train, clock = loop
    train.fail_next("grow")
    lend = next(d for d in ctl.step() if d.kind == "lend")
    assert not lend.applied and "injected failure" in lend.error
    assert ctl.mem.pending_grow == {} and train.gpus == {}
    clock.t += 30
    again = next(d for d in ctl.step() if d.kind == "lend")
    assert again.applied and train.gpus["grpo"] == again.after


def test_a_lend_never_taken_up_is_rolled_back_then_offered_again(loop):
    ctl, _load, _serve, _cap, train, clock = loop
    train.drop_next("grow")  # accepted, never acted on
    lend = next(d for d in ctl.step() if d.kind == "lend")
    assert lend.applied and ctl.mem.pending_grow["grpo"][0] == lend.after
    clock.t += 60
    assert not [d for d in ctl.step() if d.kind in ("lend", "rollback")]  # still in time
    clock.t += 60
    ds = ctl.step()
    rollback = next(d for d in ds if d.kind == "rollback")
    assert (rollback.before, rollback.after) == (lend.after, 0)
    relend = next(d for d in ds if d.kind == "lend")
    assert relend.applied and train.gpus["grpo"] == relend.after
    assert train.calls["grow"] == 2


def _lent_then_burst(ctl, train, clock):
    ctl.step()
    assert train.gpus["grpo"] > 0
    ctl.load.rates["chat"] = 40.0
    clock.t += 30


def test_a_failed_reclaim_is_not_assumed_done(loop):
    ctl, _load, _serve, _cap, train, clock = loop
    _lent_then_burst(ctl, train, clock)
    held = train.gpus["grpo"]
    train.fail_next("request_checkpoint_and_shrink")
    reclaim = next(d for d in ctl.step() if d.kind == "reclaim")
    assert not reclaim.applied and "injected failure" in reclaim.error
    assert ctl.mem.pending_shrink == {} and train.gpus["grpo"] == held
    clock.t += 30
    assert next(d for d in ctl.step() if d.kind == "reclaim").applied  # asked again


def test_a_reclaim_never_carried_out_is_asked_for_again(loop):
    ctl, _load, _serve, _cap, train, clock = loop
    _lent_then_burst(ctl, train, clock)
    train.drop_next("request_checkpoint_and_shrink")
    reclaim = next(d for d in ctl.step() if d.kind == "reclaim")
    assert reclaim.applied and ctl.mem.pending_shrink == {"grpo": reclaim.after}
    clock.t += 60
    assert not [d for d in ctl.step() if d.kind == "retry"]  # inside shrink_timeout_s
    clock.t += 60
    retry = next(d for d in ctl.step() if d.kind == "retry")
    assert retry.applied and retry.after == reclaim.after
    assert train.checkpoints["grpo"] == 1  # this time the job got it
    clock.t += 30
    ctl.step()
    assert train.gpus["grpo"] == reclaim.after and ctl.mem.pending_shrink == {}


def test_a_failed_retry_is_recorded_and_tried_again(loop):
    ctl, _load, _serve, _cap, train, clock = loop
    _lent_then_burst(ctl, train, clock)
    train.drop_next("request_checkpoint_and_shrink")
    ctl.step()
    clock.t += 120
    train.fail_next("request_checkpoint_and_shrink")
    retry = next(d for d in ctl.step() if d.kind == "retry")
    assert not retry.applied and "injected failure" in retry.error
    clock.t += 30
    assert next(d for d in ctl.step() if d.kind == "retry").applied


def test_failure_injection_names_unknown_methods():
    with pytest.raises(ValueError, match="no method 'reed'"):
        StaticLoad(WL).fail_next("reed")
    with pytest.raises(ValueError, match="only grow"):
        MemoryTraining().drop_next("current_gpus")
